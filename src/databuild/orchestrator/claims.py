"""Who is producing which ref now: the claims behind delegation (SPEC §1).

A build that will run a job claims the job's outputs; another build needing one of those refs
waits for the claimant's outcome instead of running the job again. ``Claims`` is the seam: this
module's ``LocalClaims`` keeps the truth in this service's memory; an implementation on the
event log's database can share it between several services on one log.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from itertools import filterfalse
from typing import Protocol

from attrs import define, field
from twisted.internet.defer import Deferred, succeed

from databuild.orchestrator.state import Outcome


class Claims(Protocol):
    """The registry of claims on refs, one claimant per ref at a time."""

    def claim(self, build_request_id: str, refs: Collection[str]) -> Deferred[Mapping[str, str]]:
        """Claim, in one atomic step, those of ``refs`` nobody claims.

        Fires with the claimant of every one of ``refs``: ``build_request_id`` for those it won.
        """

    def release(self, build_request_id: str, refs: Collection[str] | None = None) -> None:
        """Drop the build's claims on ``refs`` (all of them if None) without an outcome.

        Builds waiting for one of them are told it FAILED: it will not be produced.
        """

    def producer(self, ref: str) -> str | None:
        """The build claiming ``ref`` now, or None."""

    def wait_for(self, ref: str) -> Deferred[Outcome]:
        """Fires with the outcome of the claim on ``ref`` once its claimant settles it.

        ``ref`` is one ``claim`` just named another build for; an implementation shared by
        several services must also answer for a claim settled since.
        """

    def settle(self, ref: str, outcome: Outcome) -> None:
        """The claimant ``outcome.build_request_id`` is done with ``ref``; its waiters learn
        how it went. Nothing happens unless that build claims ``ref``."""


@define(eq=False)
class LocalClaims:
    """Claims kept in this service's memory: true for the builds of this service only.

    Plain dictionaries of strings, which the garbage collector does not track: a build
    claiming 100,000 refs adds no object per ref for it to walk.
    """

    _claims: dict[str, str] = field(factory=dict)
    """Each claimed ref's claimant."""
    _waiters: dict[str, list[Deferred[Outcome]]] = field(factory=dict)
    """Those waiting for a claimed ref, if any."""
    _by_build: dict[str, dict[str, None]] = field(factory=dict)
    """The refs each build claims (dict keys: smaller than a set)."""

    def claim(self, build_request_id: str, refs: Collection[str]) -> Deferred[Mapping[str, str]]:
        # In one turn, so that the answer is true when the caller acts on it; with loops in C
        # (filterfalse, dict.fromkeys, map), as a loop in Python over 100,000 refs held the
        # reactor 130 ms (docs/performance.md).
        claims = self._claims
        new = dict.fromkeys(filterfalse(claims.__contains__, refs))
        if new:
            claims.update(dict.fromkeys(new, build_request_id))
            self._by_build.setdefault(build_request_id, {}).update(new)
        return succeed(dict(zip(refs, map(claims.__getitem__, refs), strict=True)))

    def release(self, build_request_id: str, refs: Collection[str] | None = None) -> None:
        held = self._by_build.get(build_request_id, {})
        for ref in list(held) if refs is None else [ref for ref in refs if ref in held]:
            self.settle(ref, Outcome.failed(build_request_id, "its build ended without it"))

    def producer(self, ref: str) -> str | None:
        return self._claims.get(ref)

    def wait_for(self, ref: str) -> Deferred[Outcome]:
        if ref not in self._claims:
            raise LookupError(f"nobody claims {ref}")
        d: Deferred[Outcome] = Deferred()
        self._waiters.setdefault(ref, []).append(d)
        return d

    def settle(self, ref: str, outcome: Outcome) -> None:
        claimant = self._claims.get(ref)
        if claimant is None or claimant != outcome.build_request_id:
            return
        del self._claims[ref]
        held = self._by_build[claimant]
        del held[ref]
        if not held:
            del self._by_build[claimant]
        for d in self._waiters.pop(ref, ()):
            d.callback(outcome)
