"""Prometheus metrics of one service (SPEC §5.9), derived from the events it stores.

The orchestrator's progress hub hands every stored event to :meth:`ServiceMetrics.observe`;
counts, gauges and durations follow from the events alone. Labels are job labels and statuses,
never partition refs (their number is unbounded). Each service has its own registry.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from attrs import define, field
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from databuild.bel.events import BuildRequestEvent, Event, JobEvent
from databuild.bel.status import JobStatus

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode("ascii")

LEASE_STATES = ["none", "held", "lost"]
"""``none``: a log without leases (SQLite); ``held``/``lost``: this service's lease (§5.8)."""

_DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, float("inf"))
_APPEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, float("inf"))


_CURRENT = (("running", JobStatus.JOB_RUNNING), ("queued", JobStatus.JOB_SCHEDULED))


@define
class _Run:
    job_label: str
    status: JobStatus
    started_ns: int | None = None


class _Appends:
    """The event log's appends by type and their latency, kept as plain numbers and made into
    metric families when scraped: every stored event counts (a no-op build of 5,000 refs
    stores 15,000), and a prometheus counter and histogram take a lock per observation."""

    def __init__(self) -> None:
        self._by_type: dict[str, int] = {}
        self._buckets = [0] * len(_APPEND_BUCKETS)
        self._sum = 0.0

    def observe(self, event_type: str, latency_s: float) -> None:
        self._by_type[event_type] = self._by_type.get(event_type, 0) + 1
        latency_s = max(0.0, latency_s)
        self._buckets[bisect.bisect_left(_APPEND_BUCKETS, latency_s)] += 1
        self._sum += latency_s

    def collect(self) -> Iterator[Metric]:
        appends = CounterMetricFamily(
            "databuild_event_log_appends", "Events this service stored, by type",
            labels=["event_type"],
        )
        for event_type, count in self._by_type.items():
            appends.add_metric([event_type], count)
        yield appends
        yield HistogramMetricFamily(
            "databuild_event_log_append_seconds",
            "From an event's creation to its being stored (durable)",
            buckets=[
                (floatToGoString(bound), count)
                for bound, count in zip(
                    _APPEND_BUCKETS, itertools.accumulate(self._buckets), strict=True
                )
            ],
            sum_value=self._sum,
        )


@define(eq=False, slots=False)
class ServiceMetrics:
    """The metric families of one service and the state derived from its events."""

    active_builds: Callable[[], int]
    subscriptions: Callable[[], int] = field(default=int)
    """How many progress subscriptions the hub holds (a stream's, or a watch's); none by
    default (``int()`` is 0)."""
    registry: CollectorRegistry = field(factory=lambda: CollectorRegistry(auto_describe=True))
    _runs: dict[str, _Run] = field(factory=dict)
    _appends: _Appends = field(factory=lambda: _Appends())
    _children: dict[tuple[Counter, tuple[str, ...]], Any] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.builds = Counter(
            "databuild_builds", "Build requests that reached each status", ["status"], registry=r
        )
        self.job_runs = Counter(
            "databuild_job_runs", "Job runs that reached each status", ["job_label", "status"],
            registry=r,
        )
        self.run_duration = Histogram(
            "databuild_job_run_duration_seconds", "Wall time of finished job runs, by job",
            ["job_label"], buckets=_DURATION_BUCKETS, registry=r,
        )
        for name, status in _CURRENT:
            Gauge(
                f"databuild_job_runs_{name}", f"Job runs of this service now {name}", registry=r
            ).set_function(functools.partial(self._count, status))
        Gauge(
            "databuild_active_builds", "Builds this service is driving", registry=r
        ).set_function(self.active_builds)
        self.progress_streams = Gauge(
            "databuild_progress_streams_open", "Progress streams open to readers", registry=r
        )
        Gauge(
            "databuild_progress_subscriptions",
            "Subscriptions the progress hub holds (streams and the service's own watches)",
            registry=r,
        ).set_function(self.subscriptions)
        r.register(self._appends)
        self.lease = Enum(
            "databuild_lease_state", "This service's lease on a shared log (§5.8)",
            states=LEASE_STATES, registry=r,
        )
        self.lease.state("none")
        self.queue_depth = Gauge(
            "databuild_queue_depth", "Remote attempts waiting for a Celery worker, by queue",
            ["queue"], registry=r,
        )
        self.worker_runs = Gauge(
            "databuild_worker_runs", "Remote attempts running on each Celery worker now",
            ["worker"], registry=r,
        )

    def set_lease_state(self, state: str) -> None:
        """The hook for leases: ``state`` is one of :data:`LEASE_STATES`."""
        self.lease.state(state)

    def set_workers(self, queued: Mapping[str, int], workers: Sequence[Mapping[str, Any]]) -> None:
        """What the log says of the Celery workers (SPEC §10): waiting attempts by queue,
        running ones by worker; queues and workers no longer mentioned read 0."""
        for family, now in (
            (self.queue_depth, dict(queued)),
            (self.worker_runs, {w["name"]: w["running"] for w in workers}),
        ):
            for (label,) in [k for k in _labels(family) if k[0] not in now]:
                family.labels(label).set(0)
            for label, value in now.items():
                family.labels(label).set(value)

    def observe(self, event: Event) -> None:
        """Account for one stored event."""
        self._appends.observe(event.event_type, (time.time_ns() - event.timestamp) / 1e9)
        payload = event.payload
        if isinstance(payload, BuildRequestEvent):
            self._child(self.builds, payload.status.value).inc()
        elif isinstance(payload, JobEvent):
            self._job(payload, event.timestamp)

    def _child(self, family: Counter, *labels: str) -> Any:
        """``family.labels(*labels)``, kept: every stored event counts, and ``labels``
        validates and locks on each call (a tenth of a no-op build's reactor time)."""
        key = (family, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def _job(self, job: JobEvent, at_ns: int) -> None:
        self._child(self.job_runs, job.job_label, job.status.value).inc()
        run = self._runs.setdefault(job.job_run_id, _Run(job.job_label, job.status))
        run.status = job.status
        if job.status is JobStatus.JOB_RUNNING:
            run.started_ns = at_ns
        elif job.status.final:
            del self._runs[job.job_run_id]
            if run.started_ns is not None:
                self.run_duration.labels(job.job_label).observe((at_ns - run.started_ns) / 1e9)

    def _count(self, status: JobStatus) -> int:
        return sum(1 for run in self._runs.values() if run.status is status)

    def render(self) -> bytes:
        """The Prometheus text exposition of every family."""
        return generate_latest(self.registry)



def _labels(family: Gauge) -> list[tuple[str, ...]]:
    """The label values a labelled gauge has children for."""
    return [tuple(key) for key in family._metrics]
