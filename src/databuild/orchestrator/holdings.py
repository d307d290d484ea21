"""What this service knows of the refs its live builds hold: whether their data is AVAILABLE.

Every live build holds the refs it requested and its graph's outputs. While any build holds a
ref, this record, not the log, is the truth about it: the log may not have stored the latest
events yet. It follows the log's catalog rule (``bel/catalog.py``): only a run that ran for a
ref changes whether its data is AVAILABLE. A build reads from the log only refs no live build
knows, one build at a time, and lets go of its refs once its final event is stored: then the
log is the truth again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred, succeed

from databuild.bel.catalog import changes_data
from databuild.bel.status import PartitionStatus
from databuild.slices import in_slices


class PartitionSource(Protocol):
    """What holdings read from the event log."""

    def partition_statuses(self, refs: Sequence[str]) -> Deferred[dict[str, PartitionStatus]]: ...

    def partition_builders(self, refs: Sequence[str]) -> Deferred[dict[str, str]]: ...


class Holdings:
    """The refs live builds hold, and whether each one's data is AVAILABLE.

    Kept in plain dictionaries of strings, numbers and booleans, which the garbage collector
    does not track: a build holding 100,000 refs adds no object per ref for it to walk.
    """

    def __init__(self, source: PartitionSource) -> None:
        self._source = source
        self._holders: dict[str, int] = {}
        """How many live builds hold each ref."""
        self._available: dict[str, bool] = {}
        """Whether a held ref's data is AVAILABLE, once learned from the log."""
        self._built_by: dict[str, str] = {}
        """The build whose run made a held ref AVAILABLE, once known."""
        self._held: dict[str, dict[str, None]] = {}
        """The refs each live build holds (dict keys: smaller than a set)."""
        self._learning = DeferredLock()

    def hold(self, build_request_id: str, refs: Sequence[str]) -> Deferred[None]:
        """Make the build a holder of ``refs``; learn from the log those no live build knows.

        Builds take their holds one at a time, and a build writes about a ref only once it
        holds it; so a ref read from the log is one no live build has written about yet.
        """
        return self._learning.run(lambda: ensureDeferred(self._take(build_request_id, refs)))

    async def _take(self, build_request_id: str, refs: Sequence[str]) -> None:
        unknown: list[str] = []
        held = self._held.setdefault(build_request_id, {})
        holders, available = self._holders, self._available

        def take(ref: str) -> None:
            if ref not in held:
                held[ref] = None
                holders[ref] = holders.get(ref, 0) + 1
            if ref not in available:
                unknown.append(ref)

        await in_slices(refs, take)
        if unknown:
            statuses = await self._source.partition_statuses(unknown)
            for ref in unknown:
                available.setdefault(ref, statuses.get(ref) is PartitionStatus.PARTITION_AVAILABLE)

    def release(self, build_request_id: str) -> Deferred[None]:
        """The build holds nothing any more (its final event is stored); a slice of time at a
        time. Meanwhile what it still holds is true: the log says the same now."""
        return in_slices(list(self._held.pop(build_request_id, ())), self._let_go)

    def _let_go(self, ref: str) -> None:
        left = self._holders[ref] - 1
        if left:
            self._holders[ref] = left
        else:
            del self._holders[ref]
            self._available.pop(ref, None)
            self._built_by.pop(ref, None)

    def is_available(self, ref: str) -> bool:
        """Whether a held ref's data is AVAILABLE."""
        return self._available.get(ref, False)

    def built_by(self, ref: str) -> str:
        """The build whose run made a held, AVAILABLE ref (see ``learn_builders``)."""
        return self._built_by.get(ref) or "unknown"

    def note(self, ref: str, previous: PartitionStatus | None, status: PartitionStatus) -> None:
        """A holder of ``ref`` recorded ``status`` for it, after ``previous`` in that build."""
        if changes_data(previous, status) and ref in self._holders:
            self._available[ref] = status is PartitionStatus.PARTITION_AVAILABLE

    def made(self, ref: str, build_request_id: str) -> None:
        """A run of the build made the held ``ref`` AVAILABLE."""
        if ref in self._holders:
            self._built_by[ref] = build_request_id

    async def learn_builders(self, refs: Sequence[str]) -> None:
        """For held AVAILABLE refs, learn from the log the build whose run last made each."""
        unknown = [ref for ref in refs if not self._built_by.get(ref)]
        if not unknown:
            return
        builders = await self._source.partition_builders(unknown)
        for ref in unknown:
            if ref in self._holders and not self._built_by.get(ref):
                self._built_by[ref] = builders.get(ref, "unknown")

    def available(self, refs: Sequence[str]) -> Deferred[set[str]]:
        """Which of ``refs`` are AVAILABLE, for analysis: this service's word, else the log's."""
        found: set[str] = set()
        unknown: list[str] = []
        for ref in refs:
            known = self._available.get(ref) if ref in self._holders else None
            if known is None:
                unknown.append(ref)
            elif known:
                found.add(ref)
        if not unknown:
            return succeed(found)
        return self._source.partition_statuses(unknown).addCallback(
            lambda statuses: found
            | {r for r, s in statuses.items() if s is PartitionStatus.PARTITION_AVAILABLE}
        )
