"""Command resolvers: how a job's ``config`` and ``exec`` entrypoints are started.

A resolver maps each job to the argv prefix that runs it; the job protocol's entrypoint and
arguments follow that prefix (``<prefix> config REF...``, ``<prefix> exec ARGS...``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed

from databuild.errors import AnalysisError
from databuild.graph.workspace import JobSpec

CommandResolver = Callable[[Sequence[JobSpec]], Deferred[dict[str, tuple[str, ...]]]]
"""Takes jobs, returns a Deferred of ``{job label: argv prefix}`` for every one of them."""


def plain_commands(jobs: Sequence[JobSpec]) -> Deferred[dict[str, tuple[str, ...]]]:
    """The default resolver: each job's ``command``; a ``target`` job needs Bazel and fails."""
    commands: dict[str, tuple[str, ...]] = {}
    for job in jobs:
        if job.command is None:
            return fail(
                AnalysisError(
                    f"job {job.label!r} is the Bazel target {job.target!r}; "
                    "only the service's command resolver can build and run targets"
                )
            )
        commands[job.label] = job.command
    return succeed(commands)
