"""Runs' claims in the log, and waiting for runs that other services hold claims for (SPEC §5.8).

Another service's run reaches this one only through the log, so while any build waits for
one, the log is polled every ``POLL_S`` seconds (one query for every awaited run). A wait ends
once each of its runs is final, or its owner is no longer live (a take-over will fail it,
and the waiting build may run the job itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from attrs import define, field
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from databuild.bel.claims import ClaimResult, RunState

POLL_S = 0.5


class RunClaims(Protocol):
    """What runs use of ``databuild.bel.EventLog`` to claim their outputs and wait."""

    def claim(
        self, job_run_id: str, build_request_id: str, refs: list[str], *, skip_available: bool
    ) -> Deferred[ClaimResult]: ...

    def run_states(self, job_run_ids: list[str]) -> Deferred[dict[str, RunState]]: ...


@define(eq=False)
class _Wait:
    runs: frozenset[str]
    done: Deferred[dict[str, RunState]]


def settled(state: RunState | None) -> bool:
    """Whether waiting for a run is over: it is final, unknown, or its owner is gone."""
    return state is None or state.status.final or not state.owner_live


@define(eq=False)
class RemoteRuns:
    """Fires waits for runs of other services as the log shows them ending."""

    log = Logger()

    clock: IReactorTime
    source: RunClaims
    poll_s: float = POLL_S
    _waits: list[_Wait] = field(factory=list)
    _loop: LoopingCall | None = None

    def wait(self, job_run_ids: Sequence[str]) -> Deferred[dict[str, RunState]]:
        """Fires with the state of each run once all are settled; cancellable."""
        wait = _Wait(frozenset(job_run_ids), Deferred(lambda _: self._drop(wait)))
        self._waits.append(wait)
        if self._loop is None:
            self._loop = LoopingCall(lambda: ensureDeferred(self._poll()))
            self._loop.clock = self.clock
            self._loop.start(self.poll_s, now=False).addErrback(
                lambda f: self.log.failure("polling for other services' runs broke", f)
            )
        return wait.done

    def _drop(self, wait: _Wait) -> None:
        if wait in self._waits:
            self._waits.remove(wait)
        if not self._waits and self._loop is not None:
            self._loop.stop()
            self._loop = None

    async def _poll(self) -> None:
        runs = sorted({run for wait in self._waits for run in wait.runs})
        try:
            states = await self.source.run_states(runs)
        except Exception as e:
            self.log.warn("could not read other services' runs: {error}", error=str(e))
            return
        for wait in list(self._waits):
            if all(settled(states.get(run)) for run in wait.runs):
                self._drop(wait)
                wait.done.callback({run: states[run] for run in wait.runs if run in states})
