"""The OpenAPI 3.1 description of the HTTP API (SPEC §5.4-§5.6, §5.9), served as JSON.

It is checked against the live service by ``tests/service/test_openapi.py``: every endpoint the
service answers is here, and every answer fits the schema it names.
"""

from __future__ import annotations

from typing import Any

import databuild
from databuild.bel.queries import MAX_LIMIT, MAX_POSITION
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.service.logs import DEFAULT_LIMIT as LOG_DEFAULT_LIMIT
from databuild.service.logs import MAX_LIMIT as LOG_MAX_LIMIT

Schema = dict[str, Any]

NANOS: Schema = {"type": "integer", "description": "Unix time in nanoseconds"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: dict[str, Schema], **optional: Schema) -> Schema:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **optional},
    }


def _statuses(kind: type[BuildStatus] | type[JobStatus] | type[PartitionStatus]) -> Schema:
    return {"type": "string", "enum": [s.value for s in kind]}


def _status_filter(kind: type[BuildStatus] | type[JobStatus] | type[PartitionStatus]) -> Schema:
    names = [s.value for s in kind] + [s.short for s in kind]
    return {"type": "string", "enum": names}


STRING: Schema = {"type": "string"}
REFS: Schema = {"type": "array", "items": STRING}

SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {"error": _object({"code": STRING, "message": STRING})}
    ),
    "Build": _object(
        {
            "build_request_id": STRING,
            "status": _statuses(BuildStatus),
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
        service_id={**_nullable(STRING), "description": "the service that owns it (§5.8)"},
        ended_at={**_nullable(NANOS), "description": "when it reached a final status"},
        duration_s={**_nullable({"type": "number"}),
                    "description": "from its request to its end; null while it runs"},
    ),
    "Service": _object(
        {
            "service_id": STRING,
            "host": STRING,
            "pid": {"type": "integer"},
            "process_start": {"type": "integer", "description": "clock ticks since boot"},
            "version": STRING,
            "workspace": STRING,
            "started_at": NANOS,
            "renewed_at": NANOS,
            "expires_at": _nullable(NANOS),
            "state": {"enum": ["live", "stopped", "dead"]},
            "taken_over_by": _nullable(STRING),
            "ended_at": _nullable(NANOS),
            "lease": {"enum": ["live", "expired", "stopped", "dead"]},
        }
    ),
    "Task": _object(
        {
            "job_run_id": STRING,
            "job_label": STRING,
            "build_request_id": STRING,
            "status": _statuses(JobStatus),
            "outputs": REFS,
            "started_at": _nullable(NANOS),
            "ended_at": _nullable(NANOS),
            "duration_s": _nullable({"type": "number"}),
            "exit_code": _nullable({"type": "integer"}),
            "message": STRING,
        },
        scheduled_at=_nullable(NANOS),
        inputs={**_nullable({"type": "array", "items": _object(
            {"partition_ref": STRING, "dep_type": STRING})}),
            "description": "from the plan (show only); null for runs planned before"},
        args=_nullable({"type": "array", "items": STRING}),
        env=_nullable({"type": "object", "additionalProperties": STRING}),
    ),
    "Partition": _object(
        {
            "partition_ref": STRING,
            "status": _statuses(PartitionStatus),
            "updated_at": NANOS,
            "build_request_id": _nullable(STRING),
            "job_run_id": _nullable(STRING),
            "job_label": _nullable(STRING),
        }
    ),
    "Job": _object(
        {
            "job_label": STRING,
            "runs": {"type": "integer"},
            "succeeded": {"type": "integer"},
            "failed": {"type": "integer"},
            "mean_duration_s": _nullable({"type": "number"}),
            "last_run_at": _nullable(NANOS),
            "skipped": {"type": "integer", "minimum": 0,
                        "description": "runs skipped: outputs already available, or delegated"},
        }
    ),
    "Event": {
        **_object(
            {
                "idx": {"type": "integer"},
                "event_id": STRING,
                "timestamp": NANOS,
                "build_request_id": STRING,
                "event_type": {
                    "type": "string",
                    "enum": ["build_request", "partition", "job", "delegation", "job_graph"],
                },
            }
        ),
        "description": "the envelope; the payload's fields (SPEC §4.1) follow in the object",
    },
    "JobGraph": _object(
        {
            "outputs": REFS,
            "job_runs": {
                "type": "array",
                "items": _object(
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
    "BuildBody": {
        **_object({"partitions": REFS}, force={"type": "boolean", "default": False}),
        "additionalProperties": False,
    },
    "Accepted": _object({"build_request_id": STRING, "progress_url": STRING}),
}
SCHEMAS["BuildDetail"] = {
    "allOf": [
        _ref("Build"),
        _object(
            {
                "tasks": {"type": "array", "items": _ref("Task")},
                "partitions": {
                    "type": "array",
                    "items": _object(
                        {"partition_ref": STRING, "status": _statuses(PartitionStatus)}
                    ),
                },
            }
        ),
    ]
}
_LINKED = {"type": "array", "items": _object(
    {"partition_ref": STRING, "status": _nullable(_statuses(PartitionStatus))})}
SCHEMAS["PartitionDetail"] = {
    "allOf": [
        _ref("Partition"),
        _object(
            {
                "history": {"type": "array", "items": _ref("Event")},
                "job_runs": {"type": "array", "items": _ref("Task")},
                "lineage": {
                    **_object({"upstream": _LINKED, "downstream": _LINKED}),
                    "description": "what its producing run read, and what the runs that read "
                                   "it make (at most 100 each)",
                },
            }
        ),
    ]
}
_COUNTS: Schema = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
SCHEMAS["BuildJobs"] = _object({
    "build_request_id": STRING,
    "as_of_idx": {"type": "integer", "minimum": 0,
                  "description": "the build's last event counted; resume its progress stream "
                                 "with since=as_of_idx to keep the counts current"},
    "runs": {"type": "integer", "minimum": 0},
    "jobs": {"type": "array", "items": _object({
        "job_label": STRING,
        "runs": {"type": "integer", "minimum": 0, "description": "planned runs"},
        "job_runs": {**_COUNTS, "description": "count of the job's runs per job-run status"},
    })},
    "edges": {"type": "array", "items": _object({"upstream": STRING, "downstream": STRING})},
    "running": {"type": "array", "description": "its running runs (at most 1,000)",
                "items": _object({"job_run_id": STRING, "job_label": STRING})},
})
SCHEMAS["Dataset"] = _object({
    "job_label": STRING,
    "output_patterns": {"type": "array", "items": STRING},
    "partitions": {"type": "integer", "minimum": 0},
    "statuses": {**_COUNTS, "description": "count of its partitions per catalog status"},
    "strip": {
        "type": "array",
        "description": "its partitions in ref order, in at most 60 segments",
        "items": _object({"first_ref": STRING, "last_ref": STRING,
                          "partitions": {"type": "integer", "minimum": 1},
                          "statuses": _COUNTS}),
    },
})

ERRORS = {
    "400": "bad input: the message names the problem",
    "401": "no or wrong bearer token",
    "404": "unknown id or path",
    "405": "method not allowed on this path",
    "409": "conflict, e.g. cancelling a finished build",
    "413": "body over 1 MiB",
    "500": "internal error; the service keeps running",
}


def _error(description: str) -> Schema:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _json(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list(key: str, item: str) -> Schema:
    return _object({
        key: {"type": "array", "items": _ref(item)},
        "total": {**_nullable({"type": "integer", "minimum": 0}),
                  "description": "matching rows; null where counting them would walk over "
                                 "10,000 index entries, or for a glob"},
        "has_more": {"type": "boolean", "description": "whether rows follow this page"},
    })


def _query(name: str, schema: Schema, description: str = "") -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1}, "description": description}


PAGE = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}),
    _query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION, "default": 0}),
]


def _operation(
    summary: str,
    ok: dict[str, Schema],
    errors: tuple[str, ...] = (),
    *,
    parameters: list[Schema] | None = None,
    body: str | None = None,
    body_optional: bool = False,
    public: bool = False,
) -> Schema:
    operation: Schema = {
        "summary": summary,
        "parameters": parameters or [],
        "responses": {
            **ok,
            **{code: _error(ERRORS[code]) for code in (*errors, "500")},
            **({} if public else {"401": _error(ERRORS["401"])}),
        },
    }
    if public:
        operation["security"] = []
    if body is not None:
        operation["requestBody"] = {
            "required": not body_optional,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


BUILD_ID = _path("build_id", "a build request id, or a unique prefix of it (6 or more "
                 "characters; an ambiguous one is 400 `ambiguous_id`)")
TASK_ID = _path("task_id", "a job run id, or a unique prefix of it (6 or more characters)")
SHUTDOWN_BODY = {
    **_object({}, force={"type": "boolean", "default": False}),
    "additionalProperties": False,
}
SCHEMAS["ShutdownBody"] = SHUTDOWN_BODY
SCHEMAS["AnalyzeBody"] = {**_object({"partitions": REFS}), "additionalProperties": False}

_SUBMIT = _operation(
    "request a build", {"202": _json(_ref("Accepted"), "accepted")}, ("400", "413"),
    body="BuildBody",
)

PATHS: dict[str, Schema] = {
    "/api/v1/health": {"get": _operation(
        "whether the service answers, and what it serves",
        {"200": _json(_object({
            "status": {"const": "ok"}, "pid": {"type": "integer"}, "version": STRING,
            "workspace": STRING, "active_builds": {"type": "integer"},
            "idle_timeout": {"type": "number"},
            "graph": _object({"label": STRING, "fingerprint": STRING, "loaded_at": NANOS}),
            "event_log": {**STRING, "description": "the log in use, without any password"},
            "uptime_s": {"type": "number"},
        }))},
        public=True,
    )},
    "/api/v1/cli/build": {"post": _SUBMIT},
    "/api/v1/builds": {
        "post": {**_SUBMIT, "operationId": "submitBuild"},
        "get": _operation(
            "builds, newest first", {"200": _json(_list("builds", "Build"))}, ("400",),
            parameters=[_query("status", _status_filter(BuildStatus)), *PAGE],
        ),
    },
    "/api/v1/cli/builds/{build_id}/progress": {"get": _operation(
        "the build's events as Server-Sent Events (SPEC §5.6); resumes after Last-Event-ID",
        {"200": {
            "description": "frames `id: <idx>`, `event: <event_type>`, `data: <event JSON>`; "
                           "last `event: build_finished`",
            "content": {"text/event-stream": {"schema": STRING}},
        }},
        ("400", "404"),
        parameters=[
            BUILD_ID,
            _query("since", {"type": "integer", "minimum": 0}, "resume after this event idx"),
            {"name": "Last-Event-ID", "in": "header", "required": False,
             "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        ],
    )},
    "/api/v1/builds/{build_id}": {"get": _operation(
        "one build with its job runs and partitions", {"200": _json(_ref("BuildDetail"))},
        ("400", "404"), parameters=[BUILD_ID],
    )},
    "/api/v1/builds/{build_id}/cancel": {"post": _operation(
        "cancel a running build", {"200": _json(_ref("BuildDetail"))}, ("400", "404", "409"),
        parameters=[BUILD_ID],
    )},
    "/api/v1/builds/{build_id}/jobs": {"get": _operation(
        "the build at the job level: its runs per job label and status, edges between jobs",
        {"200": _json(_ref("BuildJobs"))}, ("400", "404"), parameters=[BUILD_ID],
    )},
    "/api/v1/analyze": {"post": _operation(
        "the job graph a build would run; nothing is run or recorded",
        {"200": _json(_object({"job_graph": _ref("JobGraph"), "graph_fingerprint": STRING}))},
        ("400", "413"),
        body="AnalyzeBody",
    )},
    "/api/v1/partitions": {"get": _operation(
        "the partition catalog, most recently changed first",
        {"200": _json(_list("partitions", "Partition"))}, ("400",),
        parameters=[
            _query("status", _status_filter(PartitionStatus)),
            _query("pattern", STRING, "a glob over partition refs (`*`, `?`, `[...]`)"),
            *PAGE,
        ],
    )},
    "/api/v1/partitions/{ref}": {"get": _operation(
        "one partition: its history and producing job runs",
        {"200": _json(_ref("PartitionDetail"))}, ("400", "404"),
        parameters=[_path("ref", "a partition ref, percent-encoded as one segment")],
    )},
    "/api/v1/datasets": {"get": _operation(
        "the partition catalog grouped by the job that makes it, by job label",
        {"200": _json(_list("datasets", "Dataset"))}, ("400",), parameters=PAGE,
    )},
    "/api/v1/jobs": {"get": _operation(
        "every job's run statistics", {"200": _json(_list("jobs", "Job"))}, ("400",),
        parameters=PAGE,
    )},
    "/api/v1/jobs/{label}": {"get": _operation(
        "one job's run statistics", {"200": _json(_ref("Job"))}, ("400", "404"),
        parameters=[_path("label", "a job label")],
    )},
    "/api/v1/tasks": {"get": _operation(
        "job runs, newest first", {"200": _json(_list("tasks", "Task"))}, ("400",),
        parameters=[
            _query("build_request_id", STRING), _query("job_label", STRING),
            _query("status", _status_filter(JobStatus)), *PAGE,
        ],
    )},
    "/api/v1/tasks/{task_id}": {"get": _operation(
        "one job run", {"200": _json(_ref("Task"))}, ("400", "404"), parameters=[TASK_ID],
    )},
    "/api/v1/tasks/{task_id}/cancel": {"post": _operation(
        "cancel a job run", {"200": _json(_ref("Task"))}, ("400", "404", "409"),
        parameters=[TASK_ID],
    )},
    "/api/v1/tasks/{task_id}/logs": {"get": _operation(
        "a page of the run's log lines, or (follow=true) its lines as Server-Sent Events",
        {"200": {
            **_json(_object({
                "job_run_id": STRING,
                "offset": {"type": "integer", "minimum": 0},
                "lines": {"type": "array", "items": _object(
                    {"time": NANOS, "stream": {"enum": ["stdout", "stderr"]}, "text": STRING},
                    data={"type": "object"}, continued={"type": "boolean"},
                )},
                "next_offset": {"type": "integer", "minimum": 0},
                "more": {"type": "boolean"},
            })),
            "description": "a page; with follow=true frames `id: <line index>`, "
                           "`event: log_line`, `data: <line JSON>`, last `event: log_end`",
        }},
        ("400", "404"),
        parameters=[
            TASK_ID,
            _query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION,
                              "default": 0}, "the first line (an index)"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": LOG_MAX_LIMIT,
                             "default": LOG_DEFAULT_LIMIT}),
            _query("tail", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION},
                   "start this many lines before the end"),
            _query("follow", {"type": "boolean", "default": False},
                   "stream the lines as Server-Sent Events until the run has ended"),
            {"name": "Last-Event-ID", "in": "header", "required": False,
             "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        ],
    )},
    "/api/v1/events": {"get": _operation(
        "raw event-log events after `since`, oldest first",
        {"200": _json(_object({
            "events": {"type": "array", "items": _ref("Event")},
            "next_since": {"type": "integer"},
        }))},
        ("400",),
        parameters=[
            _query("since", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION,
                             "default": 0}),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
            _query("build_request_id", STRING), _query("partition_ref", STRING),
            _query("job_label", STRING),
        ],
    )},
    "/api/v1/service/shutdown": {"post": _operation(
        "stop the service (409 while builds run, unless forced)",
        {"202": _json(_object({"status": {"const": "stopping"},
                               "active_builds": {"type": "integer"}}), "stopping")},
        ("400", "409", "413"), body="ShutdownBody", body_optional=True,
    )},
    "/api/v1/services": {"get": _operation(
        "the services sharing this event log, newest first, with their lease state (§5.8)",
        {"200": _json(_object({"services": {"type": "array", "items": _ref("Service")}}))},
    )},
    "/api/v1/dashboard/login-code": {"post": _operation(
        "a one-time dashboard login code, valid 60 s (docs/dashboard.md)",
        {"200": _json(_object({
            "code": STRING, "login_path": STRING, "expires_in_s": {"type": "number"},
        }))},
    )},
    "/api/v1/openapi.json": {"get": _operation(
        "this document", {"200": _json({"type": "object"})},
    )},
    "/metrics": {"get": _operation(
        "Prometheus metrics in the text exposition format (SPEC §5.9)",
        {"200": {"description": "OK", "content": {"text/plain": {"schema": STRING}}}},
    )},
}


def document() -> Schema:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DataBuild service API",
            "version": databuild.__version__,
            "description": "The HTTP API of a DataBuild service (SPEC §5.4-§5.6). Errors are "
                           '`{"error": {"code", "message"}}`. Lists are newest first and page '
                           "with `limit` and `offset`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
