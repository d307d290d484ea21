"""Build Event Log events (SPEC §4.1): one envelope, one payload class per ``event_type``.

An event's JSON form is the envelope's fields (``idx``, ``event_id``, ``timestamp``,
``build_request_id``, ``event_type``) followed by its payload's fields, in one flat object.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.errors import DataBuildError
from databuild.ids import new_event_id
from databuild.model import JobGraph, Refs, validate_ref


class EventJSON(dict[str, Any]):
    """An event's JSON form, with its compact JSON ``text`` when the log's stored body gave it:
    a progress stream sends that as it is instead of encoding the event again. Every
    published event makes one: built as a plain dict is, ``text`` set after."""

    __slots__ = ("text",)
    text: str | None

    @classmethod
    def stored(cls, idx: int, body: str, fields: Mapping[str, Any]) -> EventJSON:
        """The event stored at ``idx`` with ``body`` (its compact JSON without ``idx``),
        ``fields`` being that body's fields."""
        data = cls({"idx": idx, **fields})
        data.text = f'{{"idx":{idx:d},{body[1:]}'
        return data


class InvalidEvent(DataBuildError, ValueError):
    """An event's JSON form is missing fields or has fields of the wrong type."""

    code = "invalid_event"


def _build_status(value: object) -> BuildStatus:
    return BuildStatus.parse(value)


def _partition_status(value: object) -> PartitionStatus:
    return PartitionStatus.parse(value)


def _job_status(value: object) -> JobStatus:
    return JobStatus.parse(value)


def _refs(values: object) -> tuple[str, ...]:
    if type(values) is Refs:
        return values
    if not isinstance(values, list | tuple):
        raise InvalidEvent(f"expected a list of partition refs, got {values!r}")
    return tuple(map(validate_ref, values))


@frozen
class BuildRequestEvent:
    """A build request moved to ``status``."""

    event_type: ClassVar[str] = "build_request"

    status: BuildStatus = field(converter=_build_status)
    requested_partitions: tuple[str, ...] = field(default=(), converter=_refs)
    message: str = ""
    retry_of: str | None = None
    """The build this one retries (``builds retry``, SPEC §9); only on a retry's RECEIVED."""

    def to_json(self) -> dict[str, Any]:
        data = {
            "status": self.status.value,
            "requested_partitions": list(self.requested_partitions),
            "message": self.message,
        }
        if self.retry_of is not None:
            data["retry_of"] = self.retry_of
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BuildRequestEvent:
        return cls(data["status"], data.get("requested_partitions", ()), data.get("message", ""),
                   data.get("retry_of"))


@frozen
class PartitionEvent:
    """A partition moved to ``status`` within the event's build request."""

    event_type: ClassVar[str] = "partition"

    partition_ref: str = field(converter=validate_ref)
    status: PartitionStatus = field(converter=_partition_status)
    message: str = ""
    job_run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "partition_ref": self.partition_ref,
            "status": self.status.value,
            "message": self.message,
            "job_run_id": self.job_run_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartitionEvent:
        return cls(
            data["partition_ref"], data["status"], data.get("message", ""), data.get("job_run_id")
        )


@frozen
class JobEvent:
    """A job run moved to ``status``."""

    event_type: ClassVar[str] = "job"

    job_run_id: str
    job_label: str
    status: JobStatus = field(converter=_job_status)
    outputs: tuple[str, ...] = field(default=(), converter=_refs)
    message: str = ""
    exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "job_run_id": self.job_run_id,
            "job_label": self.job_label,
            "outputs": list(self.outputs),
            "status": self.status.value,
            "message": self.message,
            "exit_code": self.exit_code,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobEvent:
        return cls(
            data["job_run_id"],
            data["job_label"],
            data["status"],
            data.get("outputs", ()),
            data.get("message", ""),
            data.get("exit_code"),
        )


@frozen
class DelegationEvent:
    """The build waits for another live build that is producing ``partition_ref``."""

    event_type: ClassVar[str] = "delegation"

    partition_ref: str = field(converter=validate_ref)
    delegated_to_build_request_id: str
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "partition_ref": self.partition_ref,
            "delegated_to_build_request_id": self.delegated_to_build_request_id,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DelegationEvent:
        return cls(
            data["partition_ref"], data["delegated_to_build_request_id"], data.get("message", "")
        )


@frozen
class JobGraphEvent:
    """The result of a build request's analysis, or one piece of it, and the graph's
    fingerprint it used (SPEC §5.7; None in events written before the service recorded it).

    A big graph is stored as ``pieces`` events (SPEC §9), piece ``piece`` holding a slice of
    the outputs and of the job runs; a reader puts the graph together by concatenating the
    pieces in ``piece`` order. A graph of at most ``GRAPH_PIECE_RUNS`` runs is one event.
    """

    event_type: ClassVar[str] = "job_graph"

    job_graph: JobGraph
    graph_fingerprint: str | None = None
    piece: int = 0
    pieces: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "job_graph": self.job_graph.to_json(),
            "graph_fingerprint": self.graph_fingerprint,
            "piece": self.piece,
            "pieces": self.pieces,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobGraphEvent:
        return cls(
            JobGraph.from_json(data["job_graph"]),
            data.get("graph_fingerprint"),
            int(data.get("piece", 0)),
            int(data.get("pieces", 1)),
        )


GRAPH_PIECE_RUNS = 1000
"""Job runs (and requested outputs) per ``job_graph`` event: bounded rows and frames."""


def graph_pieces(graph: JobGraph, fingerprint: str | None) -> list[JobGraphEvent]:
    """``graph`` as the ``job_graph`` events that store it, in order."""
    size = GRAPH_PIECE_RUNS
    count = max(-(-len(graph.job_runs) // size), -(-len(graph.outputs) // size), 1)
    return [
        JobGraphEvent(
            JobGraph(
                outputs=graph.outputs[i * size : (i + 1) * size],
                job_runs=graph.job_runs[i * size : (i + 1) * size],
            ),
            fingerprint,
            i,
            count,
        )
        for i in range(count)
    ]


Payload = BuildRequestEvent | PartitionEvent | JobEvent | DelegationEvent | JobGraphEvent

PAYLOADS: Mapping[str, type[Payload]] = {
    p.event_type: p
    for p in (BuildRequestEvent, PartitionEvent, JobEvent, DelegationEvent, JobGraphEvent)
}


@frozen
class Event:
    """One entry of the log. ``idx`` is None until the log has stored the event."""

    build_request_id: str
    payload: Payload
    event_id: str = field(factory=new_event_id)
    timestamp: int = field(factory=time.time_ns)
    idx: int | None = None
    body: str | None = field(default=None, eq=False, repr=False)
    """The compact JSON of ``body_json()`` the log stored, once stored by this process."""

    @property
    def event_type(self) -> str:
        return self.payload.event_type

    def stored_at(self, idx: int, body: str | None = None) -> Event:
        """This event as stored at position ``idx`` (with ``body``, if the caller has it)."""
        # Not attrs.evolve, which costs twice as much: the writer calls this per event.
        return Event(
            self.build_request_id, self.payload, self.event_id, self.timestamp, idx, body
        )

    def to_json(self) -> EventJSON:
        if self.idx is not None and self.body is not None:
            return EventJSON.stored(self.idx, self.body, self.body_json())
        data = EventJSON({"idx": self.idx, **self.body_json()})
        data.text = None
        return data

    def body_json(self) -> dict[str, Any]:
        """The JSON form without ``idx``: what the log stores as the event's body."""
        return {
            "event_id": self.event_id,
            "timestamp": self.timestamp,
            "build_request_id": self.build_request_id,
            "event_type": self.payload.event_type,
            **self.payload.to_json(),
        }

    @classmethod
    def from_json(cls, data: object) -> Event:
        """Parse an event's JSON form; raises InvalidEvent naming what is wrong."""
        if not isinstance(data, Mapping):
            raise InvalidEvent(f"an event must be a JSON object, got {data!r}")
        payload_type = PAYLOADS.get(data.get("event_type"))  # type: ignore[arg-type]
        if payload_type is None:
            raise InvalidEvent(
                f"unknown event_type {data.get('event_type')!r}; "
                f"expected one of {', '.join(PAYLOADS)}"
            )
        try:
            return cls(
                build_request_id=data["build_request_id"],
                payload=payload_type.from_json(data),
                event_id=data["event_id"],
                timestamp=data["timestamp"],
                idx=data.get("idx"),
            )
        except KeyError as e:
            raise InvalidEvent(
                f"{payload_type.event_type} event lacks field {e.args[0]!r}"
            ) from None
        except (TypeError, ValueError) as e:
            if isinstance(e, DataBuildError):
                raise
            raise InvalidEvent(f"invalid {payload_type.event_type} event: {e}") from None
