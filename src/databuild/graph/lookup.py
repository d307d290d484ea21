"""Lookup (SPEC §3.3): which job produces each ref.

Built in, a ref goes to the one job whose ``outputs`` pattern matches it whole; the
workspace's pattern index (``patterns.py``) finds it without trying every job, and a long
request is matched a slice at a time (``databuild.slices``). A workspace may set
``[graph] lookup`` to an executable instead, called as ``<lookup> REF...`` from the workspace
root, printing ``{"<job label>": ["ref", ...], ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.task import Cooperator

from databuild.errors import InvalidRefError, LookupFailed
from databuild.graph.capture import DEFAULT_TIMEOUT_S, argv_batches, capture
from databuild.graph.workspace import JobSpec, Workspace
from databuild.model import describe_refs, validate_ref
from databuild.slices import in_slices

Assignment = dict[str, tuple[str, ...]]
"""Job label → the refs that job produces, in the order the refs were asked for."""


def match_job(workspace: Workspace, ref: str) -> JobSpec:
    """The one job whose output patterns match ``ref`` whole; LookupFailed otherwise."""
    matches = workspace.producers(ref)
    if not matches:
        raise LookupFailed(f"no job of graph {workspace.label!r} produces {ref!r}")
    if len(matches) > 1:
        labels = ", ".join(repr(j.label) for j in matches)
        raise LookupFailed(f"more than one job produces {ref!r}: {labels}")
    return matches[0]


def lookup(
    reactor: IReactorProcess,
    workspace: Workspace,
    refs: Sequence[str],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cooperator: Cooperator | None = None,
) -> Deferred[Assignment]:
    """Assign each of ``refs`` to the job producing it, built in or by the lookup executable."""
    if workspace.lookup is None:
        assignment: dict[str, list[str]] = {}

        def assign(ref: str) -> None:
            assignment.setdefault(match_job(workspace, ref).label, []).append(ref)

        return in_slices(refs, assign, cooperator).addCallback(
            lambda _: {label: tuple(found) for label, found in assignment.items()}
        )
    return ensureDeferred(_custom_lookup(reactor, workspace, workspace.lookup, refs, timeout_s))


async def _custom_lookup(
    reactor: IReactorProcess,
    workspace: Workspace,
    command: tuple[str, ...],
    refs: Sequence[str],
    timeout_s: float,
) -> Assignment:
    owner: dict[str, str] = {}
    for batch in argv_batches(refs):
        owner.update(await _lookup_batch(reactor, workspace, command, batch, timeout_s))
    assignment: dict[str, list[str]] = {}
    for ref in refs:
        assignment.setdefault(owner[ref], []).append(ref)
    return {label: tuple(found) for label, found in assignment.items()}


async def _lookup_batch(
    reactor: IReactorProcess,
    workspace: Workspace,
    command: tuple[str, ...],
    refs: tuple[str, ...],
    timeout_s: float,
) -> dict[str, str]:
    def error(problem: str) -> LookupFailed:
        return LookupFailed(f"lookup {command[0]!r} for {describe_refs(refs)} {problem}")

    try:
        captured = await capture(
            reactor, [*command, *refs], cwd=workspace.root, timeout_s=timeout_s
        )
    except OSError as e:
        raise error(f"could not be started: {e}") from None
    failure = captured.failure()
    if failure is not None:
        raise error(failure)
    try:
        reply = json.loads(captured.stdout)
    except json.JSONDecodeError as e:
        raise error(f"printed invalid JSON ({e}){captured.stderr_note}") from None
    if not isinstance(reply, dict):
        raise error('printed something other than a JSON object {"<job label>": [refs]}')
    wanted = set(refs)
    owner: dict[str, str] = {}
    for label, assigned in reply.items():
        if not workspace.has_job(label):
            raise error(f"named {label!r}, which is not a job of graph {workspace.label!r}")
        if not isinstance(assigned, list):
            raise error(f"gave job {label!r} {assigned!r}; expected a list of refs")
        for ref in assigned:
            try:
                validate_ref(ref)
            except InvalidRefError as e:
                raise error(f"gave job {label!r} a bad ref: {e}") from None
            if ref not in wanted:
                raise error(f"gave job {label!r} the ref {ref!r}, which was not asked for")
            if owner.setdefault(ref, label) != label:
                raise error(f"gave {ref!r} to two jobs: {owner[ref]!r} and {label!r}")
    missing = [ref for ref in refs if ref not in owner]
    if missing:
        raise error(f"gave no job for {describe_refs(missing)}")
    return owner
