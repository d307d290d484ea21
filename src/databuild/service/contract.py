"""The HTTP contract (SPEC §5.4-§5.6, §5.9): the OpenAPI 3.1 document, generated.

Each route declares what it takes and answers with :func:`declare`, right under its
``@app.route``; the answers' shapes are named from ``databuild.bel.shapes`` (what the event
log's read side returns) or from :data:`SCHEMAS` here (what only the API has: request bodies,
the error shape). :func:`document` walks the Klein router: every route it knows is in the
document, with its path parameters (described from :data:`PATH_PARAMETERS`) and the errors
every route can answer (401 unless public, 500). A route nobody declared still appears, as an
object-answering operation marked ``x-undeclared`` (and ``tests/service/test_openapi.py``
names it), so the router and the document never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from attrs import frozen
from klein import Klein

import databuild
from databuild.bel.queries import MAX_LIMIT, MAX_POSITION
from databuild.bel.shapes import REFS, STRING, Schema, obj, ref
from databuild.bel.shapes import SCHEMAS as READ_SHAPES
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus

OPERATION = "databuild_operation"
"""The attribute a declared route handler carries its :class:`Operation` in."""

F = TypeVar("F", bound=Callable[..., Any])

SCHEMAS: dict[str, Schema] = {
    **READ_SHAPES,
    "Error": obj({"error": obj({"code": STRING, "message": STRING})}),
    "BuildBody": {
        **obj({"partitions": REFS}, force={"type": "boolean", "default": False}),
        "additionalProperties": False,
    },
    "AnalyzeBody": {**obj({"partitions": REFS}), "additionalProperties": False},
    "ShutdownBody": {
        **obj({}, force={"type": "boolean", "default": False}),
        "additionalProperties": False,
    },
    "Accepted": obj({"build_request_id": STRING, "progress_url": STRING}),
    "RetryAccepted": obj({
        "build_request_id": STRING, "progress_url": STRING, "retry_of": STRING,
        "partitions": {"type": "integer", "minimum": 1, "description": "refs it builds"},
        "message": STRING,
    }),
    "NothingToRetry": obj({
        "build_request_id": {"type": "null"}, "retry_of": STRING,
        "partitions": {"const": 0}, "message": STRING,
    }),
}
"""Every named shape of the document: the read side's, and the API's own."""

ERRORS = {
    400: "bad input: the message names the problem",
    401: "no or wrong bearer token",
    404: "unknown id or path",
    405: "method not allowed on this path",
    409: "conflict, e.g. cancelling a finished build",
    413: "body over 1 MiB (16 MiB, or over 100,000 refs, for a build or analyze request)",
    500: "internal error; the service keeps running",
}

PATH_PARAMETERS: Mapping[str, str] = {
    "build_id": "a build request id, or a unique prefix of it (6 or more characters; an "
                "ambiguous one is 400 `ambiguous_id`)",
    "task_id": "a job run id, or a unique prefix of it (6 or more characters)",
    "ref": "a partition ref, percent-encoded as one segment",
    "label": "a job label",
}
"""What each ``<name>`` in a route's path means; a new route's parameters come from here."""

LAST_EVENT_ID: Schema = {
    "name": "Last-Event-ID", "in": "header", "required": False,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


def query(name: str, schema: Schema, description: str = "") -> Schema:
    """A query parameter (all are optional)."""
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def status_filter(kind: type[BuildStatus] | type[JobStatus] | type[PartitionStatus]) -> Schema:
    """A ``status`` query: the SPEC name or the short one."""
    return {"type": "string", "enum": [s.value for s in kind] + [s.short for s in kind]}


PAGE = (
    query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}),
    query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION, "default": 0}),
)


def json_answer(shape: Schema | str, description: str = "OK") -> Schema:
    """A JSON answer: ``shape`` is a schema, or the name of one of :data:`SCHEMAS`."""
    schema = ref(shape) if isinstance(shape, str) else shape
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def other_answer(content_type: str, description: str) -> Schema:
    """An answer that is not JSON (a stream, a text format)."""
    return {"description": description, "content": {content_type: {"schema": STRING}}}


@frozen
class Operation:
    """What one route takes and answers, beyond what every route does."""

    summary: str
    answers: Mapping[int, Schema]
    errors: tuple[int, ...] = ()
    parameters: tuple[Schema, ...] = ()
    body: str | None = None
    body_optional: bool = False
    public: bool = False


def declare(
    summary: str,
    answer: Schema | str,
    *,
    status: int = 200,
    also: Mapping[int, Schema | str] | None = None,
    errors: Sequence[int] = (),
    parameters: Sequence[Schema] = (),
    body: str | None = None,
    body_optional: bool = False,
    public: bool = False,
) -> Callable[[F], F]:
    """Declare a route's contract; put it right under the route's ``@app.route``.

    ``answer`` is the answer with ``status``: a name from :data:`SCHEMAS`, a JSON schema, or
    a whole response object (:func:`json_answer`, :func:`other_answer`). ``errors`` are the
    4xx statuses it may answer besides 401 and 500; ``also`` other successful answers by
    status, each like ``answer``; ``parameters`` its query parameters and
    headers (path parameters come from the path); ``body`` names its JSON body's shape.
    """
    answers = {
        code: json_answer(given) if isinstance(given, str) or "content" not in given else given
        for code, given in {status: answer, **(also or {})}.items()
    }
    operation = Operation(
        summary, answers, tuple(errors), tuple(parameters), body, body_optional, public
    )

    def attach(handler: F) -> F:
        setattr(handler, OPERATION, operation)
        return handler

    return attach


def _undeclared(handler: Callable[..., Any]) -> Operation:
    summary = (handler.__doc__ or handler.__name__).strip().splitlines()[0]
    return Operation(summary, {200: json_answer({"type": "object"})}, (400, 404))


def _render(operation: Operation, path_names: Sequence[str], declared: bool) -> Schema:
    parameters = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "minLength": 1},
         "description": PATH_PARAMETERS.get(name, "")}
        for name in path_names
    ]
    errors = sorted({*operation.errors, 500} | (set() if operation.public else {401}))
    rendered: Schema = {
        "summary": operation.summary,
        "parameters": [*parameters, *operation.parameters],
        "responses": {
            **{str(code): answer for code, answer in operation.answers.items()},
            **{str(code): json_answer("Error", ERRORS[code]) for code in errors},
        },
    }
    if operation.public:
        rendered["security"] = []
    if operation.body is not None:
        rendered["requestBody"] = {
            "required": not operation.body_optional,
            "content": {"application/json": {"schema": ref(operation.body)}},
        }
    if not declared:
        rendered["x-undeclared"] = True
    return rendered


_PARAMETER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def paths(app: Klein) -> dict[str, dict[str, Schema]]:
    """Every route of ``app`` (but ``HEAD`` and ``OPTIONS``), in OpenAPI's path syntax."""
    found: dict[str, dict[str, Schema]] = {}
    for rule in app.url_map.iter_rules():
        handler = app.endpoints[rule.endpoint]
        declared = getattr(handler, OPERATION, None)
        operation = declared if isinstance(declared, Operation) else _undeclared(handler)
        path = _PARAMETER.sub(r"{\1}", rule.rule)
        names = _PARAMETER.findall(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.setdefault(path, {})[method.lower()] = _render(
                operation, names, declared is not None
            )
    return found


def document(app: Klein) -> Schema:
    """The whole OpenAPI document of ``app``'s routes."""
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
        "paths": paths(app),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
