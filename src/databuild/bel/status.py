"""The statuses of build requests, job runs and partitions (SPEC §4.1).

Each value is the SPEC name (``BUILD_REQUEST_COMPLETED``); ``short`` is the lower-case form
people type and read (``completed``). ``parse`` accepts either form, in any case.
"""

from __future__ import annotations

import enum
import functools
from typing import Self, TypeVar

from databuild.errors import DataBuildError


class InvalidStatus(DataBuildError, ValueError):
    """A status name that is not one of the statuses of its kind."""

    code = "invalid_status"


class _Status(enum.StrEnum):
    """A status whose value is its SPEC name; subclasses set ``_prefix``."""

    @classmethod
    def _prefix(cls) -> str:
        raise NotImplementedError

    @property
    def short(self) -> str:
        """The lower-case name without the kind prefix: ``completed``."""
        return self.value.removeprefix(self._prefix()).lower()

    @functools.cached_property
    def final(self) -> bool:
        """Whether nothing may follow this status."""
        return self in self._finals()

    @classmethod
    def _finals(cls) -> frozenset[Self]:
        raise NotImplementedError

    @classmethod
    def parse(cls, text: object) -> Self:
        """The status named ``text``, in its SPEC or short form; raises InvalidStatus."""
        if isinstance(text, cls):
            return text
        if isinstance(text, str):
            spellings = _spellings(cls)
            found = spellings.get(text) or spellings.get(text.strip().upper())
            if found is not None:
                return found
        choices = ", ".join(s.short for s in cls)
        raise InvalidStatus(f"unknown {cls._kind()} status {text!r}; expected one of {choices}")

    @classmethod
    def _kind(cls) -> str:
        return cls._prefix().rstrip("_").lower().replace("_", " ")


_S = TypeVar("_S", bound=_Status)


@functools.cache
def _spellings(kind: type[_S]) -> dict[str, _S]:
    """Each status of ``kind`` by its name and by its short form in lower and upper case
    (the spellings given most, found without normalising them first)."""
    return {s.short: s for s in kind} | {s.short.upper(): s for s in kind} | {
        s.name: s for s in kind
    }


class BuildStatus(_Status):
    """Where a build request is."""

    BUILD_REQUEST_RECEIVED = "BUILD_REQUEST_RECEIVED"
    BUILD_REQUEST_PLANNING = "BUILD_REQUEST_PLANNING"
    BUILD_REQUEST_ANALYSIS_COMPLETED = "BUILD_REQUEST_ANALYSIS_COMPLETED"
    BUILD_REQUEST_EXECUTING = "BUILD_REQUEST_EXECUTING"
    BUILD_REQUEST_COMPLETED = "BUILD_REQUEST_COMPLETED"
    BUILD_REQUEST_FAILED = "BUILD_REQUEST_FAILED"
    BUILD_REQUEST_CANCELLED = "BUILD_REQUEST_CANCELLED"

    @classmethod
    def _prefix(cls) -> str:
        return "BUILD_REQUEST_"

    @classmethod
    def _finals(cls) -> frozenset[BuildStatus]:
        return frozenset(
            {cls.BUILD_REQUEST_COMPLETED, cls.BUILD_REQUEST_FAILED, cls.BUILD_REQUEST_CANCELLED}
        )


class JobStatus(_Status):
    """Where a job run is."""

    JOB_SCHEDULED = "JOB_SCHEDULED"
    JOB_RUNNING = "JOB_RUNNING"
    JOB_COMPLETED = "JOB_COMPLETED"
    JOB_FAILED = "JOB_FAILED"
    JOB_CANCELLED = "JOB_CANCELLED"
    JOB_SKIPPED = "JOB_SKIPPED"

    @classmethod
    def _prefix(cls) -> str:
        return "JOB_"

    @classmethod
    def _finals(cls) -> frozenset[JobStatus]:
        return frozenset(
            {cls.JOB_COMPLETED, cls.JOB_FAILED, cls.JOB_CANCELLED, cls.JOB_SKIPPED}
        )


class PartitionStatus(_Status):
    """Where a partition is, within one build request or (latest) in the catalog."""

    PARTITION_REQUESTED = "PARTITION_REQUESTED"
    PARTITION_SCHEDULED = "PARTITION_SCHEDULED"
    PARTITION_BUILDING = "PARTITION_BUILDING"
    PARTITION_AVAILABLE = "PARTITION_AVAILABLE"
    PARTITION_FAILED = "PARTITION_FAILED"
    PARTITION_DELEGATED = "PARTITION_DELEGATED"

    @classmethod
    def _prefix(cls) -> str:
        return "PARTITION_"

    @classmethod
    def _finals(cls) -> frozenset[PartitionStatus]:
        return frozenset({cls.PARTITION_AVAILABLE, cls.PARTITION_FAILED})
