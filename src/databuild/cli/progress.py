"""Showing a build's progress: what its events say, and three ways to print it.

``BuildProgress`` folds BEL events (SPEC §4.1) into counts and one line per thing worth
telling. ``PlainDisplay`` prints those lines (not a terminal), ``LiveDisplay`` adds a status
line redrawn at most every 0.2 s below them (Bazel-style) and, for a build of more than
BIG_BUILD_RUNS runs, leaves out the lines of runs that succeeded; ``JsonDisplay`` prints each
event and the final ``build_finished`` object as one JSON line each.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TextIO

from attrs import define, field

from databuild.cli.render import refs, seconds, short_status

REDRAW_S = 0.2
FINISHED_JOB_STATUSES = ("JOB_COMPLETED", "JOB_FAILED", "JOB_CANCELLED", "JOB_SKIPPED")
FINAL_BUILD_STATUSES = (
    "BUILD_REQUEST_COMPLETED", "BUILD_REQUEST_FAILED", "BUILD_REQUEST_CANCELLED",
)
SHOWN_PARTITION_STATUS = "PARTITION_DELEGATED"
"""The one partition status a display makes anything of (a ref already available, or being
built by another build)."""
_SHOWN_IN_JSON = f'"{SHOWN_PARTITION_STATUS}"'
UNSHOWN_PARTITION_STATUSES = (
    "PARTITION_REQUESTED", "PARTITION_SCHEDULED", "PARTITION_BUILDING", "PARTITION_AVAILABLE",
    "PARTITION_FAILED",
)
"""Every other partition status (SPEC §4.1; the CLI does not load the event log's modules to
list them): the CLI asks the service to leave their events out of the stream, two thirds of
a no-op's events."""


BIG_BUILD_RUNS = 100
"""Above this many job runs, a terminal lists only the runs that did not succeed (SPEC §6);
above this many requested refs, no display lists a line per ref (``Note.per_ref``)."""
TASK_ID_SHOWN = 12
"""How much of a failed run's id its line shows: a prefix any command takes (SPEC §6)."""
RUNNING_SHOWN = 3
"""How many running partitions the status line names."""


@define
class JobState:
    """One job run of the build as its events tell it."""

    label: str
    outputs: list[str]
    status: str = "JOB_SCHEDULED"
    started_ns: int | None = None


@define
class Note:
    """A line to print. ``started`` lines matter only where no live line shows running jobs;
    ``routine`` ones (a run that succeeded or was skipped, a delegation) only where the build
    is small enough to list every run."""

    text: str
    started: bool = False
    routine: bool = False
    per_ref: bool = False
    """One of the lines a build has for each of its refs (already available, waited for)."""


@define
class BuildProgress:
    """The state of one build as its events tell it; counts are kept as events come, so that
    a status line costs the same for 10 or 100,000 runs."""

    build_request_id: str
    status: str | None = None
    received_ns: int | None = None
    last_ns: int | None = None
    requested: int = 0
    planned: int = 0
    analysed: bool = False
    executing_ns: int | None = None
    """When the first run started (or the first run ended, for a build of skips only)."""
    jobs: dict[str, JobState] = field(factory=dict)
    done: int = 0
    """How many job runs are final."""
    running: dict[str, JobState] = field(factory=dict)
    """The job runs running now, oldest first."""
    unstarted_cancelled: int = 0
    """Runs cancelled before they started: told in one line when the build ends."""

    @property
    def total(self) -> int:
        """How many job runs the build has, as far as known."""
        return max(self.planned, len(self.jobs))

    @property
    def big(self) -> bool:
        """Whether the build has too many runs to list each one that succeeds."""
        return self.total > BIG_BUILD_RUNS

    @property
    def many_refs(self) -> bool:
        """Whether the build asked for too many refs to give each a line."""
        return self.requested > BIG_BUILD_RUNS

    def lists(self, note: Note) -> bool:
        """Whether ``note`` gets a line at all: not one of a line per ref when the build asked
        for too many refs (SPEC §6 lists runs, not refs; each run's line names its refs)."""
        return not (note.per_ref and self.many_refs)

    @property
    def omit(self) -> tuple[str, ...]:
        """The partition statuses whose events no line of this build needs: with too many
        refs for a line each, DELEGATED too, whose only use is such a line (known when the
        CLI asked for the refs itself: ``build``, not ``tail``)."""
        if self.many_refs:
            return (SHOWN_PARTITION_STATUS, *UNSHOWN_PARTITION_STATUSES)
        return UNSHOWN_PARTITION_STATUSES

    def elapsed_s(self, now_ns: int) -> float:
        """Seconds since the build was received."""
        return 0.0 if self.received_ns is None else max(0, now_ns - self.received_ns) / 1e9

    def eta_s(self, now_ns: int) -> float | None:
        """Seconds left at the completion rate since execution began; None before a run ended
        or once every run has."""
        if self.executing_ns is None or not 0 < self.done < self.total:
            return None
        spent = max(0, now_ns - self.executing_ns) / 1e9
        return spent * (self.total - self.done) / self.done

    @staticmethod
    def wants(event_type: str, data: str) -> bool:
        """Whether ``apply`` can make anything of an event of ``event_type`` whose JSON is
        ``data``: of partition events, only a DELEGATED one (``data`` naming that status is
        checked again there). The others time nothing either: a build's first and last
        events are its own statuses. (A service that ignores ``omit`` sends them all.)"""
        return event_type != "partition" or _SHOWN_IN_JSON in data

    def apply(self, event: Mapping[str, Any]) -> list[Note]:
        """Take one event into account; returns the lines it is worth."""
        ts = event.get("timestamp")
        if isinstance(ts, int):
            self.last_ns = ts
            if self.received_ns is None:
                self.received_ns = ts
        kind = event.get("event_type")
        if kind == "build_request":
            return self._build(event)
        if kind == "job_graph":
            # A big graph comes in pieces (SPEC §9), each with a slice of the runs.
            self.planned += len((event.get("job_graph") or {}).get("job_runs") or [])
            self.analysed = True
            return []
        if kind == "job":
            return self._job(event)
        if kind == "delegation":
            return [self._delegation(event)]
        if kind == "partition" and event.get("status") == SHOWN_PARTITION_STATUS:
            return self._relied_on(event)
        return []

    def _delegation(self, event: Mapping[str, Any]) -> Note:
        """A ref this build waits for: another build is making it now."""
        other = str(event.get("delegated_to_build_request_id"))
        text = f"waiting   {event.get('partition_ref')}: {event.get('message') or 'delegated'}"
        if other not in text:
            text += f" (build {other})"
        return Note(text, routine=True, per_ref=True)

    def _relied_on(self, event: Mapping[str, Any]) -> list[Note]:
        """A requested ref that was AVAILABLE already: not built again. The service says so in
        the partition's message (orchestrator/course.py); nothing is waited for."""
        message = str(event.get("message") or "")
        if not message.startswith("already available"):
            return []  # a ref being built by another build: its ``delegation`` event says so
        return [Note(f"available {event.get('partition_ref')}: {message}", routine=True,
                     per_ref=True)]

    def _build(self, event: Mapping[str, Any]) -> list[Note]:
        status = event.get("status")
        self.status = status
        if status == "BUILD_REQUEST_RECEIVED":
            requested = event.get("requested_partitions") or []
            self.requested = len(requested)
            line = f"build {self.build_request_id}: {refs(requested)}"
            if event.get("retry_of"):
                line += f" (retry of build {event['retry_of']})"
            return [Note(line)]
        if status == "BUILD_REQUEST_ANALYSIS_COMPLETED":
            self.analysed = True
            return [Note(f"analysed: {self.planned} job run{'s' if self.planned != 1 else ''}")]
        if status in FINAL_BUILD_STATUSES and self.unstarted_cancelled:
            n, self.unstarted_cancelled = self.unstarted_cancelled, 0
            return [Note(f"{n} job run{'s' if n != 1 else ''} cancelled before "
                         f"{'they' if n != 1 else 'it'} started")]
        return []

    def _job(self, event: Mapping[str, Any]) -> list[Note]:
        run_id = str(event.get("job_run_id"))
        job = self.jobs.get(run_id)
        if job is None:
            job = self.jobs[run_id] = JobState(
                str(event.get("job_label")), list(event.get("outputs") or [])
            )
        was_final = job.status in FINISHED_JOB_STATUSES
        job.status = str(event.get("status"))
        ts = event.get("timestamp")
        what = f"{job.label}  {refs(job.outputs, most=2)}"
        if job.status == "JOB_RUNNING":
            job.started_ns = ts if isinstance(ts, int) else None
            self.running[run_id] = job
            if self.executing_ns is None:
                self.executing_ns = job.started_ns
            return [Note(f"{'started':<9} {what}", started=True)]
        if job.status not in FINISHED_JOB_STATUSES:
            return []
        self.running.pop(run_id, None)
        if not was_final:
            self.done += 1
        if self.executing_ns is None and isinstance(ts, int):
            self.executing_ns = ts
        if job.status == "JOB_CANCELLED" and job.started_ns is None:
            self.unstarted_cancelled += 1
            return []
        text = f"{short_status(job.status):<9} {what}"
        if job.started_ns is not None and isinstance(ts, int):
            text += f"  {seconds((ts - job.started_ns) / 1e9)}"
        if job.status == "JOB_FAILED" and event.get("exit_code") is not None:
            text += f"  exit {event['exit_code']}"
        if job.status != "JOB_COMPLETED" and event.get("message"):
            text += f": {event['message']}"
        if job.status == "JOB_FAILED":
            task = run_id[:TASK_ID_SHOWN]
            text += f"  [task {task}; log: databuild tasks logs {task}]"
        return [Note(text, routine=job.status in ("JOB_COMPLETED", "JOB_SKIPPED"))]

    def live_line(self, now_ns: int) -> str:
        """The status line: runs done of all, the share done, elapsed time, time left, and
        the partitions being built now (SPEC §6, §9)."""
        elapsed = f"{self.elapsed_s(now_ns):.0f}s"
        if not self.analysed:
            n = self.requested
            what = f" {n} ref{'s' if n != 1 else ''}" if n else ""
            return f"analysing{what}… {elapsed}"
        total = self.total
        share = f"{100 * self.done // total}%" if total else "100%"
        line = f"[{self.done} / {total}] {share} {elapsed}"
        eta = self.eta_s(now_ns)
        if eta is not None:
            line += f" ETA {_duration(eta)}"
        if self.running:
            shown = [refs(j.outputs, most=1) for j in itertools.islice(
                self.running.values(), RUNNING_SHOWN)]
            more = len(self.running) - len(shown)
            line += f"  {len(self.running)} running: " + ", ".join(shown)
            if more:
                line += f" (+{more} more)"
        return line

    def summary(self, finished: Mapping[str, Any]) -> str:
        """The last line: outcome, elapsed time, job counts and why it failed (a long reason
        continues on indented lines)."""
        status = short_status(finished.get("status"))
        elapsed = ""
        if self.received_ns is not None and self.last_ns is not None:
            elapsed = f" in {seconds(self.elapsed_s(self.last_ns))}"
        tally: dict[str, int] = {}
        for job in self.jobs.values():
            tally[short_status(job.status)] = tally.get(short_status(job.status), 0) + 1
        jobs = ", ".join(f"{n} {s}" for s, n in tally.items()) or "no job runs"
        line = f"build {self.build_request_id} {status}{elapsed} ({jobs})"
        message = str(finished.get("message") or "")
        if message and status != "completed":
            first, *more = message.splitlines()
            line = "\n  ".join([f"{line}: {first}", *more])
        return line


def _duration(value_s: float) -> str:
    """A time left, as people say it: ``45s``, ``3m05s``, ``2h10m``."""
    s = round(value_s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Display(Protocol):
    """Where a build's progress goes: each event it wants, then the ``build_finished``
    object. ``omit``: the statuses whose events it never wants, left out by the service."""

    @property
    def omit(self) -> tuple[str, ...]: ...

    def wants(self, event_type: str, data: str) -> bool: ...
    def event(self, raw: str, event: Mapping[str, Any]) -> None: ...
    def finished(self, raw: str, finished: Mapping[str, Any]) -> None: ...
    def close(self) -> None: ...


@define
class JsonDisplay:
    """One JSON object per line: each event as the service sent it, then ``build_finished``."""

    out: TextIO
    omit: ClassVar[tuple[str, ...]] = ()

    def wants(self, event_type: str, data: str) -> bool:
        return True

    def event(self, raw: str, event: Mapping[str, Any]) -> None:
        self.out.write(raw + "\n")
        self.out.flush()

    def finished(self, raw: str, finished: Mapping[str, Any]) -> None:
        self.event(raw, finished)

    def close(self) -> None:
        pass


@define
class PlainDisplay:
    """Plain lines, no cursor control: for pipes and files."""

    out: TextIO
    progress: BuildProgress

    @property
    def omit(self) -> tuple[str, ...]:
        return self.progress.omit

    def wants(self, event_type: str, data: str) -> bool:
        return self.progress.wants(event_type, data)

    def event(self, raw: str, event: Mapping[str, Any]) -> None:
        progress = self.progress
        for note in progress.apply(event):
            if progress.lists(note):
                self.out.write(note.text + "\n")
        self.out.flush()

    def finished(self, raw: str, finished: Mapping[str, Any]) -> None:
        self.out.write(self.progress.summary(finished) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


@define
class LiveDisplay:
    """Lines for finished jobs, with a live status line below them redrawn every 0.2 s."""

    out: TextIO
    progress: BuildProgress
    schedule: Callable[[float, Callable[[], None]], Any]
    clock: Callable[[], float] = time.time
    _shown: str = ""
    _timer: Any = None
    _closed: bool = False

    def __attrs_post_init__(self) -> None:
        self._tick()

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._draw(self.progress.live_line(int(self.clock() * 1e9)))
        self._timer = self.schedule(REDRAW_S, self._tick)

    def _draw(self, line: str) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        line = line[: max(width - 1, 10)]
        if line != self._shown:
            self.out.write("\r\x1b[K" + line)
            self.out.flush()
            self._shown = line

    def _above(self, text: str) -> None:
        self.out.write("\r\x1b[K" + text + "\n" + self._shown)
        self.out.flush()

    @property
    def omit(self) -> tuple[str, ...]:
        return self.progress.omit

    def wants(self, event_type: str, data: str) -> bool:
        return self.progress.wants(event_type, data)

    def event(self, raw: str, event: Mapping[str, Any]) -> None:
        progress = self.progress
        for note in progress.apply(event):
            if not note.started and progress.lists(note) and not (note.routine and progress.big):
                self._above(note.text)

    def finished(self, raw: str, finished: Mapping[str, Any]) -> None:
        self.close()
        self.out.write(self.progress.summary(finished) + "\n")
        self.out.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._shown = ""  # from now on, plain lines only
        self.out.write("\r\x1b[K")
        self.out.flush()


def parse_event(raw: str) -> dict[str, Any]:
    """The JSON object of one frame's data (an empty object if it is not one)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
