"""Running a short-lived child (a job's ``config``, a custom lookup) and capturing its stdout."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from attrs import frozen
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorProcess

from databuild.proc.process import ProcessResult, spawn

DEFAULT_TIMEOUT_S = 60.0
"""How long a ``config`` or lookup process may take before its process group is killed."""

MAX_ARGV_BYTES = 256 * 1024
"""Refs passed to one child at most, in bytes; more refs are split over several children."""


@frozen
class Captured:
    """How a child ended, with everything it printed on stdout."""

    result: ProcessResult
    stdout: str
    timeout_s: float

    @property
    def stderr_note(self) -> str:
        """``"; stderr:"`` and the child's last stderr lines, or nothing if it printed none."""
        tail = self.result.stderr_tail.strip()
        return f"; stderr:\n{tail}" if tail else ""

    def failure(self) -> str | None:
        """None if the child succeeded, else a phrase saying how it failed, with stderr."""
        if self.result.succeeded:
            return None
        if self.result.timed_out:
            how = f"timed out after {self.timeout_s:g} s and was killed"
        else:
            how = self.result.describe()
        return how + self.stderr_note


def capture(
    reactor: IReactorProcess, argv: Sequence[str], *, cwd: Path, timeout_s: float
) -> Deferred[Captured]:
    """Run ``argv`` in ``cwd`` with the service's environment; fires with a Captured.

    Cancelling the returned Deferred terminates the child's process group.
    """
    stdout: list[str] = []

    def on_line(stream: str, text: str, continued: bool = False) -> None:  # lines are uncapped
        if stream == "stdout":
            stdout.append(text)

    try:
        child = spawn(reactor, argv, cwd=cwd, env=os.environ, on_line=on_line, timeout_s=timeout_s)
    except OSError as e:
        return fail(e)
    captured: Deferred[Captured] = Deferred(child.canceller)

    def ended(result: ProcessResult) -> None:
        if not captured.called:  # else it was cancelled already
            captured.callback(Captured(result, "\n".join(stdout), timeout_s))

    child.result.addCallback(ended)
    return captured


def argv_batches(refs: Sequence[str], limit: int = MAX_ARGV_BYTES) -> Iterator[tuple[str, ...]]:
    """Split ``refs`` into runs of at most ``limit`` bytes of arguments (at least one ref each)."""
    batch: list[str] = []
    size = 0
    for ref in refs:
        cost = len(ref.encode()) + 1
        if batch and size + cost > limit:
            yield tuple(batch)
            batch, size = [], 0
        batch.append(ref)
        size += cost
    if batch:
        yield tuple(batch)
