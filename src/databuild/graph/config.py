"""The ``config`` side of the job protocol (SPEC §3.1): asking a job how to make some refs."""

from __future__ import annotations

import json
from collections.abc import Sequence

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorProcess

from databuild.errors import AnalysisError, JobProtocolError
from databuild.graph.capture import DEFAULT_TIMEOUT_S, argv_batches, capture
from databuild.graph.workspace import JobSpec, Workspace
from databuild.model import JobConfig, describe_refs, parse_config_output


def run_config(
    reactor: IReactorProcess,
    workspace: Workspace,
    job: JobSpec,
    argv_prefix: Sequence[str],
    refs: Sequence[str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Deferred[tuple[JobConfig, ...]]:
    """Run ``<argv_prefix> config REF...`` and return the configs covering ``refs``.

    Fails with an AnalysisError naming the job, the refs and the job's stderr tail if the
    process fails or hangs, prints something other than a configs object, or leaves one of
    ``refs`` out of every config's outputs. Very many refs are split over several processes.
    """
    batches = [
        ensureDeferred(_config_batch(reactor, workspace, job, argv_prefix, batch, timeout_s))
        for batch in argv_batches(refs)
    ]
    return gatherResults(batches, consumeErrors=True).addCallbacks(
        lambda results: tuple(c for configs in results for c in configs),
        lambda failure: failure.value.subFailure,
    )


async def _config_batch(
    reactor: IReactorProcess,
    workspace: Workspace,
    job: JobSpec,
    argv_prefix: Sequence[str],
    refs: tuple[str, ...],
    timeout_s: float,
) -> tuple[JobConfig, ...]:
    def error(problem: str) -> AnalysisError:
        return AnalysisError(f"job {job.label!r}: config for {describe_refs(refs)} {problem}")

    argv = [*argv_prefix, "config", *refs]
    try:
        captured = await capture(reactor, argv, cwd=workspace.root, timeout_s=timeout_s)
    except OSError as e:
        raise error(f"could not be started ({argv[0]}): {e}") from None
    failure = captured.failure()
    if failure is not None:
        raise error(failure)
    try:
        configs = parse_config_output(json.loads(captured.stdout))
    except json.JSONDecodeError as e:
        raise error(
            f"printed invalid JSON ({e}): {_shorten(captured.stdout)!r}{captured.stderr_note}"
        ) from None
    except JobProtocolError as e:
        raise error(f"printed a bad reply: {e}{captured.stderr_note}") from None
    produced = {ref for c in configs for ref in c.outputs}
    missing = [ref for ref in refs if ref not in produced]
    if missing:
        raise error(
            f"left {describe_refs(missing)} out of every config's outputs{captured.stderr_note}"
        )
    return configs


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
