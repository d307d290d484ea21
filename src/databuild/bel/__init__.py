"""The Build Event Log (SPEC §4): events, transitions, storage and read queries."""

from databuild.bel.backend import DuplicateEvent, EventLogError, StoreUnavailable
from databuild.bel.events import (
    BuildRequestEvent,
    DelegationEvent,
    Event,
    InvalidEvent,
    JobEvent,
    JobGraphEvent,
    PartitionEvent,
    Payload,
)
from databuild.bel.log import EventLog, open_event_log
from databuild.bel.queries import InvalidQuery
from databuild.bel.status import BuildStatus, InvalidStatus, JobStatus, PartitionStatus
from databuild.bel.transitions import IllegalTransition

__all__ = [
    "BuildRequestEvent",
    "BuildStatus",
    "DelegationEvent",
    "DuplicateEvent",
    "Event",
    "EventLog",
    "EventLogError",
    "IllegalTransition",
    "InvalidEvent",
    "InvalidQuery",
    "InvalidStatus",
    "JobEvent",
    "JobGraphEvent",
    "JobStatus",
    "PartitionEvent",
    "PartitionStatus",
    "Payload",
    "StoreUnavailable",
    "open_event_log",
]
