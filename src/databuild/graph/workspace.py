"""The workspace and its graph file, ``databuild.toml`` (SPEC §2), read strictly.

Every problem in the file is a GraphFileError whose message names the file, the table or job
concerned and what is wrong with it, so a user can fix it without reading code.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import field, frozen

from databuild.errors import GraphFileError
from databuild.graph.patterns import PatternIndex
from databuild.startup import GRAPH_FILE

STATE_DIR = ".databuild"

_TOP_KEYS = frozenset({"graph", "service", "bazel", "executor", "jobs"})
_GRAPH_KEYS = frozenset({"label", "lookup"})
_SERVICE_KEYS = frozenset({"event_log", "port", "idle_timeout", "max_parallel_jobs"})
_BAZEL_KEYS = frozenset({"command", "build_flags"})
_EXECUTOR_KEYS = frozenset({"kind", "broker", "queue"})
EXECUTOR_KINDS = ("local", "celery")
_JOB_KEYS = frozenset({"label", "outputs", "command", "target", "timeout", "retries", "queue"})


@frozen
class ServiceSettings:
    """The ``[service]`` table; ``None`` for every key the file does not set."""

    event_log: str | None = None
    port: int | None = None
    idle_timeout: float | None = None
    max_parallel_jobs: int | None = None


@frozen
class BazelSettings:
    """The ``[bazel]`` table: how to invoke Bazel for jobs given as a ``target``."""

    command: tuple[str, ...] = ("bazel",)
    build_flags: tuple[str, ...] = ()


@frozen
class ExecutorSettings:
    """The ``[executor]`` table (SPEC §10); ``None`` for every key the file does not set."""

    kind: str | None = None
    broker: str | None = None
    queue: str | None = None


@frozen
class JobSpec:
    """One ``[[jobs]]`` entry: a job, the refs it produces and how to start it."""

    label: str
    outputs: tuple[re.Pattern[str], ...]
    command: tuple[str, ...] | None = None
    target: str | None = None
    timeout: float | None = None
    retries: int = 0
    queue: str | None = None
    """The broker queue of its runs on Celery workers (the ``[executor]`` queue if unset)."""

    def produces(self, ref: str) -> bool:
        """Whether one of this job's output patterns matches the whole of ``ref``."""
        return any(p.fullmatch(ref) for p in self.outputs)


@frozen
class Workspace:
    """A workspace directory and its parsed graph file."""

    root: Path
    label: str
    lookup: tuple[str, ...] | None
    service: ServiceSettings
    bazel: BazelSettings
    jobs: tuple[JobSpec, ...]
    executor: ExecutorSettings = ExecutorSettings()
    fingerprint: str = field(default="", eq=False)
    """What the graph was loaded from, hashed (set by ``databuild.graph.source``)."""
    _by_label: dict[str, JobSpec] = field(init=False, repr=False, eq=False)
    _patterns: PatternIndex = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_label", {j.label: j for j in self.jobs})
        object.__setattr__(self, "_patterns", PatternIndex([j.outputs for j in self.jobs]))

    @property
    def state_dir(self) -> Path:
        """Where the service keeps its state: ``<root>/.databuild``."""
        return self.root / STATE_DIR

    def job(self, label: str) -> JobSpec:
        """The job called ``label``; KeyError if there is none."""
        return self._by_label[label]

    def has_job(self, label: str) -> bool:
        """Whether the graph has a job called ``label``."""
        return label in self._by_label

    def producers(self, ref: str) -> list[JobSpec]:
        """The jobs with an output pattern matching all of ``ref``, in the file's order."""
        return [self.jobs[index] for index in self._patterns.matching(ref)]

    @property
    def patterns(self) -> PatternIndex:
        """The index of the jobs' output patterns that ``producers`` asks."""
        return self._patterns


def load_workspace(root: Path) -> Workspace:
    """Read and validate ``<root>/databuild.toml``; raises GraphFileError."""
    root = Path(root).resolve()
    path = root / GRAPH_FILE
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise GraphFileError(f"{path}: no such file; {root} is not a workspace") from None
    except OSError as e:
        raise GraphFileError(f"{path}: cannot be read: {e}") from None
    return parse_workspace(root, content)


def parse_workspace(root: Path, content: bytes) -> Workspace:
    """Validate ``content``, the bytes of ``<root>/databuild.toml``; raises GraphFileError."""
    path = root / GRAPH_FILE
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GraphFileError(f"{path}: cannot be read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # The decoder's message ends with "(at line L, column C)".
        raise GraphFileError(f"{path}: invalid TOML: {e}") from None
    return _Reader(path).workspace(root, data)


def _type_name(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class _Reader:
    """Turns the decoded TOML into domain values, naming the file in every error."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def error(self, where: str, problem: str) -> GraphFileError:
        return GraphFileError(f"{self._path}: {where}: {problem}")

    def workspace(self, root: Path, data: dict[str, Any]) -> Workspace:
        self.keys(data, _TOP_KEYS, "top level")
        graph = self.table(data, "graph", "top level", required=True)
        self.keys(graph, _GRAPH_KEYS, "[graph]")
        label = self.label(graph.get("label"), "[graph]", "label")
        lookup = graph.get("lookup")
        service = self.table(data, "service", "top level")
        self.keys(service, _SERVICE_KEYS, "[service]")
        bazel = self.table(data, "bazel", "top level")
        self.keys(bazel, _BAZEL_KEYS, "[bazel]")
        executor = self.table(data, "executor", "top level")
        self.keys(executor, _EXECUTOR_KEYS, "[executor]")
        return Workspace(
            root=root,
            label=label,
            lookup=None if lookup is None else self.argv(lookup, "[graph]", "lookup"),
            service=self.service(service),
            bazel=BazelSettings(
                command=self.argv(bazel.get("command", ["bazel"]), "[bazel]", "command"),
                build_flags=self.strings(bazel.get("build_flags", []), "[bazel]", "build_flags"),
            ),
            jobs=self.jobs(data.get("jobs", [])),
            executor=self.executor(executor),
        )

    def keys(self, table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.error(
                where,
                f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})",
            )

    def table(
        self, data: Mapping[str, Any], key: str, where: str, *, required: bool = False
    ) -> dict[str, Any]:
        if key not in data:
            if required:
                raise self.error(where, f"missing table [{key}]")
            return {}
        value = data[key]
        if not isinstance(value, dict):
            raise self.error(where, f"{key!r} must be a table, not {_type_name(value)}")
        return value

    def service(self, table: dict[str, Any]) -> ServiceSettings:
        where = "[service]"
        event_log = table.get("event_log")
        if event_log is not None:
            event_log = self.string(event_log, where, "event_log")
        port = table.get("port")
        if port is not None:
            port = self.integer(port, where, "port", 0, 65535)
        idle = table.get("idle_timeout")
        if idle is not None:
            idle = self.number(idle, where, "idle_timeout", allow_zero=True)
        parallel = table.get("max_parallel_jobs")
        if parallel is not None:
            parallel = self.integer(parallel, where, "max_parallel_jobs", 1, None)
        return ServiceSettings(event_log, port, idle, parallel)

    def executor(self, table: dict[str, Any]) -> ExecutorSettings:
        where = "[executor]"
        kind = table.get("kind")
        if kind is not None and self.string(kind, where, "kind") not in EXECUTOR_KINDS:
            raise self.error(where, f"'kind' is {kind!r}; it must be one of "
                             + ", ".join(repr(k) for k in EXECUTOR_KINDS))
        broker, queue = table.get("broker"), table.get("queue")
        return ExecutorSettings(
            kind=kind,
            broker=None if broker is None else self.string(broker, where, "broker"),
            queue=None if queue is None else self.label(queue, where, "queue"),
        )

    def jobs(self, value: object) -> tuple[JobSpec, ...]:
        if not isinstance(value, list) or not all(isinstance(j, dict) for j in value):
            raise self.error("top level", "'jobs' must be an array of tables ([[jobs]])")
        jobs: dict[str, JobSpec] = {}
        for index, table in enumerate(value):
            job = self.job(index, table)
            if job.label in jobs:
                raise self.error(f"job {job.label!r}", "two jobs have this label")
            jobs[job.label] = job
        return tuple(jobs.values())

    def job(self, index: int, table: dict[str, Any]) -> JobSpec:
        where = f"jobs[{index}] (no label)"
        label = self.label(table.get("label"), where, "label")
        where = f"job {label!r}"
        self.keys(table, _JOB_KEYS, where)
        if "outputs" not in table:
            raise self.error(where, "missing key 'outputs'")
        patterns = self.strings(table["outputs"], where, "outputs", non_empty=True)
        outputs = tuple(self.pattern(p, where, i) for i, p in enumerate(patterns))
        has_command, has_target = "command" in table, "target" in table
        if has_command == has_target:
            which = "both" if has_command else "neither"
            raise self.error(where, f"has {which} of 'command' and 'target'; give exactly one")
        timeout = table.get("timeout")
        return JobSpec(
            label=label,
            outputs=outputs,
            command=self.argv(table["command"], where, "command") if has_command else None,
            target=self.string(table["target"], where, "target") if has_target else None,
            timeout=None if timeout is None else self.number(timeout, where, "timeout"),
            retries=self.integer(table.get("retries", 0), where, "retries", 0, None),
            queue=self.label(table["queue"], where, "queue") if "queue" in table else None,
        )

    def pattern(self, source: str, where: str, index: int) -> re.Pattern[str]:
        try:
            return re.compile(source)
        except re.error as e:
            raise self.error(
                where, f"outputs[{index}] {source!r} is not a valid regular expression: {e}"
            ) from None

    def label(self, value: object, where: str, key: str) -> str:
        if value is None:
            raise self.error(where, f"missing key {key!r}")
        label = self.string(value, where, key)
        if any(ch.isspace() or not ch.isprintable() for ch in label):
            raise self.error(where, f"{key} {label!r} must not contain whitespace")
        return label

    def string(self, value: object, where: str, key: str) -> str:
        if not isinstance(value, str):
            raise self.error(where, f"{key!r} must be a string, not {_type_name(value)}")
        if not value:
            raise self.error(where, f"{key!r} must not be empty")
        return value

    def strings(
        self, value: object, where: str, key: str, *, non_empty: bool = False
    ) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(where, f"{key!r} must be an array of strings")
        if non_empty and not value:
            raise self.error(where, f"{key!r} must not be empty")
        return tuple(value)

    def argv(self, value: object, where: str, key: str) -> tuple[str, ...]:
        argv = self.strings(value, where, key, non_empty=True)
        if not argv[0]:
            raise self.error(where, f"{key!r} must start with a program name")
        return argv

    def integer(
        self, value: object, where: str, key: str, minimum: int, maximum: int | None
    ) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(where, f"{key!r} must be an integer, not {_type_name(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"{minimum} to {maximum}"
            raise self.error(where, f"{key!r} is {value}; it must be {bounds}")
        return value

    def number(self, value: object, where: str, key: str, *, allow_zero: bool = False) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.error(where, f"{key!r} must be a number of seconds, not {_type_name(value)}")
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            bound = "zero or more" if allow_zero else "more than zero"
            raise self.error(where, f"{key!r} is {value}; it must be {bound} seconds")
        return float(value)
