"""The JSON shapes of what the event log's read side answers (SPEC §5.5), written once.

``bel/queries.py`` returns dicts in these shapes (``tests/bel/test_queries.py`` checks every
query's answer against its shape); the service's OpenAPI document (``service/contract.py``)
names them as its components, so an endpoint's answer is described by pointing here. The
event types are listed here too, from the payload classes (``EVENT_TYPES``): the dashboard's
pages get the list from the service, and nothing else spells it out.

Schemas are JSON Schema (OpenAPI 3.1) as plain dicts.
"""

from __future__ import annotations

from typing import Any

from databuild.bel.events import PAYLOADS
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus

Schema = dict[str, Any]

EVENT_TYPES: tuple[str, ...] = tuple(PAYLOADS)
"""Every event type of the log, as its events' ``event_type`` says (SPEC §4.1)."""
BUILD_FINISHED = "build_finished"
"""The progress stream's last frame (SPEC §5.6): not a stored event."""


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def ref(name: str) -> Schema:
    """A pointer to the shape called ``name`` (one of ``SCHEMAS``, or an API's own)."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], **optional: Schema) -> Schema:
    """An object with ``required`` fields and ``optional`` ones."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **optional},
    }


def statuses(kind: type[BuildStatus] | type[JobStatus] | type[PartitionStatus]) -> Schema:
    return {"type": "string", "enum": [s.value for s in kind]}


def page(key: str, item: str) -> Schema:
    """A page of a list: ``{key: [item...], "total", "has_more"}``."""
    return obj({
        key: {"type": "array", "items": ref(item)},
        "total": {**nullable({"type": "integer", "minimum": 0}),
                  "description": "matching rows; null where counting them would walk over "
                                 "10,000 index entries, or for a glob"},
        "has_more": {"type": "boolean", "description": "whether rows follow this page"},
    })


NANOS: Schema = {"type": "integer", "description": "Unix time in nanoseconds"}
STRING: Schema = {"type": "string"}
REFS: Schema = {"type": "array", "items": STRING}

SCHEMAS: dict[str, Schema] = {
    # The answers of the read side, by name.
    "Build": obj(
        {
            "build_request_id": STRING,
            "status": statuses(BuildStatus),
            "requested_partitions": REFS,
            "created_at": NANOS,
            "updated_at": NANOS,
            "message": STRING,
            "job_runs": {
                "type": "object",
                "description": "count of the build's job runs per job-run status",
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
        },
        service_id={**nullable(STRING), "description": "the service that owns it (§5.8)"},
        retry_of={**nullable(STRING), "description": "the build this one retries (§9)"},
        ended_at={**nullable(NANOS), "description": "when it reached a final status"},
        duration_s={**nullable({"type": "number"}),
                    "description": "from its request to its end; null while it runs"},
    ),
    "Service": obj(
        {
            "service_id": STRING,
            "host": STRING,
            "pid": {"type": "integer"},
            "process_start": {"type": "integer", "description": "clock ticks since boot"},
            "version": STRING,
            "workspace": STRING,
            "started_at": NANOS,
            "renewed_at": NANOS,
            "expires_at": nullable(NANOS),
            "state": {"enum": ["live", "stopped", "dead"]},
            "taken_over_by": nullable(STRING),
            "ended_at": nullable(NANOS),
            "lease": {"enum": ["live", "expired", "stopped", "dead"]},
        }
    ),
    "Worker": obj(
        {
            "name": STRING,
            "host": STRING,
            "pid": {"type": "integer"},
            "queues": {"type": "array", "items": STRING},
            "concurrency": {"type": "integer"},
            "started_at": NANOS,
            "last_heartbeat": NANOS,
            "live": {"type": "boolean"},
            "running": {"type": "integer", "description": "attempts running on it now"},
            "runs_total": {"type": "integer"},
        }
    ),
    "Task": obj(
        {
            "job_run_id": STRING,
            "job_label": STRING,
            "build_request_id": STRING,
            "status": statuses(JobStatus),
            "outputs": REFS,
            "started_at": nullable(NANOS),
            "ended_at": nullable(NANOS),
            "duration_s": nullable({"type": "number"}),
            "exit_code": nullable({"type": "integer"}),
            "message": STRING,
        },
        scheduled_at=nullable(NANOS),
        worker={**nullable(STRING),
                "description": "the Celery worker of its last attempt (§10; shown by a celery "
                "service's task endpoints)"},
        inputs={**nullable({"type": "array", "items": obj(
            {"partition_ref": STRING, "dep_type": STRING})}),
            "description": "from the plan (one run only); null for runs planned before"},
        args=nullable({"type": "array", "items": STRING}),
        env=nullable({"type": "object", "additionalProperties": STRING}),
    ),
    "Partition": obj(
        {
            "partition_ref": STRING,
            "status": statuses(PartitionStatus),
            "updated_at": NANOS,
            "build_request_id": nullable(STRING),
            "job_run_id": nullable(STRING),
            "job_label": nullable(STRING),
        }
    ),
    "Job": obj(
        {
            "job_label": STRING,
            "runs": {"type": "integer"},
            "succeeded": {"type": "integer"},
            "failed": {"type": "integer"},
            "mean_duration_s": nullable({"type": "number"}),
            "last_run_at": nullable(NANOS),
            "skipped": {"type": "integer", "minimum": 0,
                        "description": "runs skipped: outputs already available, or delegated"},
        }
    ),
    "Event": {
        **obj(
            {
                "idx": {"type": "integer"},
                "event_id": STRING,
                "timestamp": NANOS,
                "build_request_id": STRING,
                "event_type": {"type": "string", "enum": list(EVENT_TYPES)},
            }
        ),
        "description": "the envelope; the payload's fields (SPEC §4.1) follow in the object",
    },
    "JobGraph": obj(
        {
            "outputs": REFS,
            "job_runs": {
                "type": "array",
                "items": obj(
                    {
                        "job_run_id": STRING,
                        "job_label": STRING,
                        "outputs": REFS,
                        "inputs": {"type": "array"},
                        "args": {"type": "array", "items": STRING},
                        "env": {"type": "object", "additionalProperties": STRING},
                    }
                ),
            },
        }
    ),
}
SCHEMAS["BuildDetail"] = {
    "allOf": [
        ref("Build"),
        obj(
            {
                "tasks": {"type": "array", "items": ref("Task")},
                "retried_by": {**REFS, "description": "the builds that retried this one, "
                               "newest first (at most 100)"},
                "partitions": {
                    "type": "array",
                    "items": obj(
                        {"partition_ref": STRING, "status": statuses(PartitionStatus)}
                    ),
                },
            }
        ),
    ]
}
_LINKED: Schema = {"type": "array", "items": obj(
    {"partition_ref": STRING, "status": nullable(statuses(PartitionStatus))})}
SCHEMAS["PartitionDetail"] = {
    "allOf": [
        ref("Partition"),
        obj(
            {
                "history": {"type": "array", "items": ref("Event")},
                "job_runs": {"type": "array", "items": ref("Task")},
                "lineage": {
                    **obj({"upstream": _LINKED, "downstream": _LINKED}),
                    "description": "what its producing run read, and what the runs that read "
                                   "it make (at most 100 each)",
                },
            }
        ),
    ]
}
_COUNTS: Schema = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
SCHEMAS["BuildJobs"] = obj({
    "build_request_id": STRING,
    "as_of_idx": {"type": "integer", "minimum": 0,
                  "description": "the build's last event counted; resume its progress stream "
                                 "with since=as_of_idx to keep the counts current"},
    "runs": {"type": "integer", "minimum": 0},
    "jobs": {"type": "array", "items": obj({
        "job_label": STRING,
        "runs": {"type": "integer", "minimum": 0, "description": "planned runs"},
        "job_runs": {**_COUNTS, "description": "count of the job's runs per job-run status"},
    })},
    "edges": {"type": "array", "items": obj({"upstream": STRING, "downstream": STRING})},
    "running": {"type": "array", "description": "its running runs (at most 1,000)",
                "items": obj({"job_run_id": STRING, "job_label": STRING})},
})
SCHEMAS["Dataset"] = obj(
    {
        "job_label": STRING,
        "partitions": {"type": "integer", "minimum": 0},
        "statuses": {**_COUNTS, "description": "count of its partitions per catalog status"},
        "strip": {
            "type": "array",
            "description": "its partitions in ref order, in at most 60 segments",
            "items": obj({"first_ref": STRING, "last_ref": STRING,
                          "partitions": {"type": "integer", "minimum": 1},
                          "statuses": _COUNTS}),
        },
    },
    output_patterns={"type": "array", "items": STRING,
                     "description": "the job's output patterns in the graph as last loaded "
                                    "(the API adds them)"},
)
