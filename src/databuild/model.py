"""The domain: partition refs, job configs, job runs and job graphs, with their JSON forms.

JSON shapes follow SPEC §3.1 (job configs, as jobs print them) and §4.1 (job graphs, as the
event log and the API carry them).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from attrs import frozen

from databuild.errors import InvalidRefError, JobProtocolError

MAX_REF_LENGTH = 1024


def validate_ref(value: object) -> str:
    """Return ``value`` if it is a valid partition ref (SPEC §1), else raise InvalidRefError."""
    if not isinstance(value, str):
        raise InvalidRefError(f"partition ref must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidRefError("partition ref must not be empty")
    if len(value) > MAX_REF_LENGTH:
        raise InvalidRefError(
            f"partition ref is {len(value)} characters long; at most {MAX_REF_LENGTH} allowed"
        )
    # Every whitespace character but the ASCII space is unprintable: one C-level test per ref
    # (the event log validates each event's refs; a loop per character cost ~2 µs per ref).
    if value.isprintable() and " " not in value:
        return value
    ch = next(ch for ch in value if not ch.isprintable() or ch.isspace())
    raise InvalidRefError(
        f"partition ref {value!r} contains whitespace or a control character ({ch!r})"
    )


class Refs(tuple[str, ...]):
    """Partition refs that ``validate_refs`` passed: valid, non-empty, without repeats.

    Only ``validate_refs`` makes them. A request's refs are checked once, where they come in;
    every later check of the same refs (the orchestrator's, the analysis's, an event's) sees
    this type and trusts it: at 100,000 refs each check is a long turn of the reactor.
    """

    __slots__ = ()


def validate_refs(values: object) -> Refs:
    """Validate a non-empty list of refs, dropping repeats while keeping order."""
    if type(values) is Refs:
        return values
    if not isinstance(values, list | tuple) or not values:
        raise InvalidRefError("expected a non-empty list of partition refs")
    return Refs(dict.fromkeys(map(validate_ref, values)))


def describe_refs(refs: Sequence[str], limit: int = 5) -> str:
    """Refs for a message: the first ``limit`` of them, then how many more."""
    shown = ", ".join(refs[:limit])
    more = len(refs) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def _ref_from_json(value: object, where: str) -> str:
    if isinstance(value, Mapping):
        value = value.get("str")
    try:
        return validate_ref(value)
    except InvalidRefError as e:
        raise JobProtocolError(f"{where}: {e}") from None


class DepType(enum.IntEnum):
    """How a job run depends on an input partition."""

    QUERY = 0
    MATERIALIZE = 1

    @property
    def type_name(self) -> str:
        """The wire name: ``query`` or ``materialize``."""
        return self.name.lower()


@frozen
class PartitionInput:
    """One input of a job run: a partition ref and how it is depended upon."""

    partition_ref: str
    dep_type: DepType = DepType.MATERIALIZE

    def to_json(self) -> dict[str, Any]:
        """The wire form, with both the code and the name of the dependency type."""
        return {
            "dep_type_code": int(self.dep_type),
            "dep_type_name": self.dep_type.type_name,
            "partition_ref": {"str": self.partition_ref},
        }

    @classmethod
    def from_json(cls, data: object) -> PartitionInput:
        """Parse one input; by code, else by name, else MATERIALIZE. JobProtocolError if bad."""
        if not isinstance(data, Mapping):
            raise JobProtocolError(f"an input must be an object, got {data!r}")
        code = data.get("dep_type_code")
        if code is None and "dep_type_name" in data:
            names = {d.type_name: d for d in DepType}
            if data["dep_type_name"] not in names:
                raise JobProtocolError(f"unknown dep_type_name {data['dep_type_name']!r}")
            dep = names[data["dep_type_name"]]
        else:
            try:
                dep = DepType(1 if code is None else code)
            except ValueError:
                raise JobProtocolError(f"unknown dep_type_code {code!r}") from None
        return cls(_ref_from_json(data.get("partition_ref"), "input"), dep)


def _str_tuple(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise JobProtocolError(f"{what} must be a list of strings, got {value!r}")
    return tuple(value)


EMPTY: Mapping[str, str] = MappingProxyType({})
"""One empty mapping for all that have none (a config's env, a plan's delegations): not an
empty dict per run of a big build."""


def _str_map(value: object, what: str) -> Mapping[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise JobProtocolError(f"{what} must be an object of strings, got {value!r}")
    return dict(value) if value else EMPTY


@frozen
class JobConfig:
    """One config a job's ``config`` entrypoint returned: one future job run."""

    outputs: tuple[str, ...]
    inputs: tuple[PartitionInput, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = EMPTY

    @property
    def materialize_inputs(self) -> tuple[str, ...]:
        """The refs this config needs built first (its QUERY inputs are only read)."""
        return tuple(
            i.partition_ref for i in self.inputs if i.dep_type is DepType.MATERIALIZE
        )

    def to_json(self) -> dict[str, Any]:
        """The config as the job protocol writes it (refs as ``{"str": ...}``)."""
        return {
            "outputs": [{"str": r} for r in self.outputs],
            "inputs": [i.to_json() for i in self.inputs],
            "args": list(self.args),
            "env": dict(self.env),
        }

    @classmethod
    def from_json(cls, data: object) -> JobConfig:
        """Parse one config object; raises JobProtocolError naming what is wrong."""
        if not isinstance(data, Mapping):
            raise JobProtocolError(f"a config must be an object, got {data!r}")
        outputs = data.get("outputs")
        if not isinstance(outputs, list) or not outputs:
            raise JobProtocolError("a config needs a non-empty list 'outputs'")
        inputs = data.get("inputs", [])
        if not isinstance(inputs, list):
            raise JobProtocolError(f"'inputs' must be a list, got {inputs!r}")
        return cls(
            outputs=tuple(_ref_from_json(o, "output") for o in outputs),
            inputs=tuple(PartitionInput.from_json(i) for i in inputs),
            args=_str_tuple(data.get("args", []), "'args'"),
            env=_str_map(data.get("env", {}), "'env'"),
        )


def parse_config_output(data: object) -> tuple[JobConfig, ...]:
    """Parse a whole ``config`` reply, ``{"configs": [...]}``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("configs"), list):
        raise JobProtocolError('expected a JSON object {"configs": [...]}')
    return tuple(JobConfig.from_json(c) for c in data["configs"])


@frozen
class JobRun:
    """A planned run of one job for one config (a "task")."""

    job_run_id: str
    job_label: str
    config: JobConfig

    @property
    def outputs(self) -> tuple[str, ...]:
        """The refs this run makes."""
        return self.config.outputs

    def to_json(self) -> dict[str, Any]:
        """A ``job_runs`` entry of a job graph (SPEC §4.1): outputs as plain strings."""
        c = self.config.to_json()
        return {
            "job_run_id": self.job_run_id,
            "job_label": self.job_label,
            "outputs": [o["str"] for o in c["outputs"]],
            "inputs": c["inputs"],
            "args": c["args"],
            "env": c["env"],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobRun:
        """The inverse of ``to_json``."""
        return cls(
            job_run_id=data["job_run_id"],
            job_label=data["job_label"],
            config=JobConfig.from_json(data),
        )


@frozen
class JobGraph:
    """The analysed plan of a build: the requested outputs and the job runs that make them."""

    outputs: tuple[str, ...]
    job_runs: tuple[JobRun, ...]
    kept: frozenset[str] = frozenset()
    """Ids of the runs that stand for requested refs AVAILABLE when analysed, a batch of one
    job's refs each: their job's ``config`` was not asked, and a build only skips them."""

    def producer_of(self, ref: str) -> JobRun | None:
        """The run of this graph producing ``ref``, if any."""
        return self._producers().get(ref)

    def _producers(self) -> dict[str, JobRun]:
        producers: dict[str, JobRun] = {}
        for run in self.job_runs:
            for ref in run.outputs:
                producers.setdefault(ref, run)
        return producers

    def upstream(self, run: JobRun) -> Iterator[JobRun]:
        """The runs of this graph producing ``run``'s materialize inputs."""
        producers = self._producers()
        seen: set[str] = set()
        for ref in run.config.materialize_inputs:
            up = producers.get(ref)
            if up is not None and up.job_run_id not in seen:
                seen.add(up.job_run_id)
                yield up

    def to_json(self) -> dict[str, Any]:
        """The ``job_graph`` JSON (SPEC §4.1)."""
        return {"outputs": list(self.outputs), "job_runs": [r.to_json() for r in self.job_runs]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobGraph:
        """The inverse of ``to_json``."""
        return cls(
            outputs=tuple(data["outputs"]),
            job_runs=tuple(JobRun.from_json(r) for r in data["job_runs"]),
        )

