"""The catalog rule (SPEC §4.2): which partition events change a ref's catalog status.

A ref's catalog status is the state of its data. Only a job run that actually ran for the ref
changes it: its ``PARTITION_BUILDING``, then the ``PARTITION_AVAILABLE`` or
``PARTITION_FAILED`` that follows it in the same build. Every other partition event is a
build's bookkeeping: it stays in that build's history and ``partitions`` list, and reaches the
catalog only while no run has touched the ref yet. ``sql/*-004-data-status.sql`` applies the
same rule to the history of logs written before it.
"""

from __future__ import annotations

from databuild.bel.status import PartitionStatus

P = PartitionStatus


def changes_data(previous: PartitionStatus | None, status: PartitionStatus) -> bool:
    """Whether a ref moving from ``previous`` to ``status`` within one build is about its data."""
    return status is P.PARTITION_BUILDING or previous is P.PARTITION_BUILDING
