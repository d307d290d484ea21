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

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred, succeed

from databuild.bel.catalog import changes_data
from databuild.bel.status import PartitionStatus
from databuild.slices import in_slices


class PartitionSource(Protocol):
    """What holdings read from the event log."""

    def partition_statuses(self, refs: Sequence[str]) -> Deferred[dict[str, PartitionStatus]]: ...

    def partition_builders(self, refs: Sequence[str]) -> Deferred[dict[str, str]]: ...


@define(eq=False)
class _Held:
    holders: set[str] = field(factory=set)
    """Ids of the live builds holding the ref."""
    available: bool | None = None
    """Whether its data is AVAILABLE; None until learned from the log."""
    built_by: str = ""
    """The build whose run made it AVAILABLE, once known."""


class Holdings:
    """The refs live builds hold, and whether each one's data is AVAILABLE."""

    def __init__(self, source: PartitionSource) -> None:
        self._source = source
        self._refs: dict[str, _Held] = {}
        self._held: dict[str, set[str]] = {}
        self._learning = DeferredLock()

    def hold(self, build_request_id: str, refs: Sequence[str]) -> Deferred[None]:
        """Make the build a holder of ``refs``; learn from the log those no live build knows.

        Builds take their holds one at a time, and a build writes about a ref only once it
        holds it; so a ref read from the log is one no live build has written about yet.
        """
        return self._learning.run(lambda: ensureDeferred(self._take(build_request_id, refs)))

    async def _take(self, build_request_id: str, refs: Sequence[str]) -> None:
        unknown: list[str] = []
        held = self._held.setdefault(build_request_id, set())

        def take(ref: str) -> None:
            entry = self._refs.setdefault(ref, _Held())
            entry.holders.add(build_request_id)
            held.add(ref)
            if entry.available is None:
                unknown.append(ref)

        await in_slices(refs, take)
        if unknown:
            statuses = await self._source.partition_statuses(unknown)
            for ref in unknown:
                entry = self._refs[ref]
                if entry.available is None:
                    entry.available = statuses.get(ref) is PartitionStatus.PARTITION_AVAILABLE

    def release(self, build_request_id: str) -> None:
        """The build holds nothing any more (its final event is stored)."""
        for ref in self._held.pop(build_request_id, ()):
            entry = self._refs[ref]
            entry.holders.discard(build_request_id)
            if not entry.holders:
                del self._refs[ref]

    def is_available(self, ref: str) -> bool:
        """Whether a held ref's data is AVAILABLE."""
        return bool(self._refs[ref].available)

    def built_by(self, ref: str) -> str:
        """The build whose run made a held, AVAILABLE ref (see ``learn_builders``)."""
        return self._refs[ref].built_by or "unknown"

    def note(self, ref: str, previous: PartitionStatus | None, status: PartitionStatus) -> None:
        """A holder of ``ref`` recorded ``status`` for it, after ``previous`` in that build."""
        if changes_data(previous, status):
            self._refs[ref].available = status is PartitionStatus.PARTITION_AVAILABLE

    def made(self, ref: str, build_request_id: str) -> None:
        """A run of the build made the held ``ref`` AVAILABLE."""
        self._refs[ref].built_by = build_request_id

    async def learn_builders(self, refs: Sequence[str]) -> None:
        """For held AVAILABLE refs, learn from the log the build whose run last made each."""
        unknown = [ref for ref in refs if not self._refs[ref].built_by]
        if not unknown:
            return
        builders = await self._source.partition_builders(unknown)
        for ref in unknown:
            entry = self._refs[ref]
            if not entry.built_by:
                entry.built_by = builders.get(ref, "unknown")

    def available(self, refs: Sequence[str]) -> Deferred[set[str]]:
        """Which of ``refs`` are AVAILABLE, for analysis: this service's word, else the log's."""
        known = {ref: entry.available for ref in refs if (entry := self._refs.get(ref))}
        found = {ref for ref, available in known.items() if available}
        unknown = [ref for ref, available in known.items() if available is None] + [
            ref for ref in refs if ref not in known
        ]
        if not unknown:
            return succeed(found)
        return self._source.partition_statuses(unknown).addCallback(
            lambda statuses: found
            | {r for r, s in statuses.items() if s is PartitionStatus.PARTITION_AVAILABLE}
        )
