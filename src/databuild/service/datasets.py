"""The partition catalog grouped by dataset: the job that makes each partition, with that
job's output patterns from the graph (``GET /api/v1/datasets`` and the partitions page)."""

from __future__ import annotations

from typing import Any

from databuild.bel import EventLog
from databuild.graph.workspace import Workspace


async def list_datasets(
    event_log: EventLog, workspace: Workspace, limit: object, offset: object
) -> dict[str, Any]:
    """A page of datasets, by job label, each with its ``output_patterns`` (from
    ``workspace``, the graph as last loaded; empty for a job it no longer has)."""
    found = await event_log.list_datasets(limit, offset)
    patterns = {job.label: [p.pattern for p in job.outputs] for job in workspace.jobs}
    for dataset in found["datasets"]:
        dataset["output_patterns"] = patterns.get(dataset["job_label"], [])
    return found
