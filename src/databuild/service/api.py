"""The HTTP API (SPEC §5.4, §5.5): thin routes over the event log's queries and the orchestrator.

Every handler runs shielded (:func:`_shielded`): when a client disconnects, Klein cancels the
route's Deferred, and that cancellation must never reach a Deferred of the orchestrator or the
event log (a build must not be cancelled because its requester went away).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from klein import Klein
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute

from databuild.bel import EventLog, EventLogError, IllegalTransition, StoreUnavailable
from databuild.bel.queries import MAX_LIMIT, MAX_MATCHES, MAX_POSITION
from databuild.bel.shapes import (
    BUILD_FINISHED,
    EVENT_TYPES,
    NANOS,
    STRING,
    obj,
    page,
    ref,
)
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.errors import Conflict, DataBuildError, NotFound
from databuild.model import validate_ref, validate_refs
from databuild.orchestrator import Orchestrator
from databuild.refs import MAX_REFS, TooManyRefs, too_many
from databuild.service import contract, logs
from databuild.service import responses as r
from databuild.service.actions import Actions
from databuild.service.contract import (
    LAST_EVENT_ID,
    PAGE,
    declare,
    json_answer,
    other_answer,
    query,
    status_filter,
)
from databuild.service.dashboard.access import CODE_TTL_S, DashboardAccess
from databuild.service.datasets import list_datasets
from databuild.service.hot import HotRead
from databuild.service.metrics import CONTENT_TYPE, ServiceMetrics
from databuild.service.responses import ApiError
from databuild.service.settings import ServiceConfig
from databuild.service.sse import ProgressStream, event_frame
from databuild.service.trim import Trimmer

Handler = Callable[..., Coroutine[Any, Any, object]]


def _shielded(handler: Handler) -> Callable[..., Deferred[Any]]:
    """Run ``handler`` to its end whatever happens to the Deferred Klein gets.

    Klein gets a fresh Deferred; cancelling it does not cancel the handler. A ``dict`` result
    is answered as JSON with status 200 (or the status the handler set), encoded a slice at a
    time if it is big (``responses.json_in_slices``).
    """

    @functools.wraps(handler)
    def route(self: Any, request: Request, **kwargs: Any) -> Deferred[Any]:
        outer: Deferred[object] = Deferred()
        inner: Deferred[object] = ensureDeferred(handler(self, request, **kwargs))

        def answer(result: object) -> None:
            if not outer.called:
                outer.callback(result)

        def fail(failure: Failure) -> None:
            # An answer that cannot be encoded too: the routes' error handler logs it and
            # answers 500, rather than the request waiting forever.
            if not outer.called:
                outer.errback(failure)

        def deliver(result: object) -> None:
            if outer.called:
                return
            if not isinstance(result, dict):
                outer.callback(result)
                return
            r.json_headers(request, request.code)
            encoded = maybeDeferred(r.json_in_slices, result)
            encoded.addCallbacks(answer, fail)

        inner.addCallbacks(deliver, fail)
        return outer

    return route


shielded = _shielded
"""The same, for the dashboard's routes."""


# A DataBuildError is the client's fault (400) unless it is one of these.
_STATUS_OF_ERROR: tuple[tuple[type[DataBuildError], int], ...] = (
    (NotFound, 404),
    (TooManyRefs, 413),
    (Conflict, 409),
    (StoreUnavailable, 503),
    (EventLogError, 500),
    (IllegalTransition, 500),
)


def error_response(request: Request, failure: Failure) -> bytes:
    """The JSON error answering ``failure``; unexpected ones are logged and answered 500."""
    e = failure.value
    if isinstance(e, ApiError):
        error = e
    elif isinstance(e, MethodNotAllowed):
        request.setHeader(b"allow", ", ".join(e.valid_methods or ()).encode("ascii"))
        error = ApiError(
            405,
            "method_not_allowed",
            f"{request.method.decode('ascii', 'replace')} is not allowed on this path; "
            f"use {' or '.join(e.valid_methods or ())}",
        )
    elif isinstance(e, NoRoute):
        error = ApiError(
            404, "not_found", f"no such API path: {request.path.decode('ascii', 'replace')}"
        )
    elif isinstance(e, HTTPException):
        error = ApiError(e.code or 500, "http_error", e.description or e.name)
    elif isinstance(e, DataBuildError):
        status = next((s for kind, s in _STATUS_OF_ERROR if isinstance(e, kind)), 400)
        if status == 500:
            Api.log.failure(
                "server error answering {path}",
                failure,
                path=request.path.decode("ascii", "replace"),
            )
        error = ApiError(status, e.code, str(e))
    else:
        Api.log.failure(
            "internal error answering {method} {path}",
            failure,
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"),
        )
        error = ApiError(500, "internal_error", f"internal error: {type(e).__name__}: {e}")
    return r.respond_error(request, error)


class WorkerSource(Protocol):
    """What the API reads of Celery workers (``executor.celery_launcher.CeleryLauncher``)."""

    def workers(self) -> Deferred[list[dict[str, Any]]]: ...

    def worker_of(self, job_run_id: str) -> Deferred[str | None]: ...


class Api:
    """The routes of the service; one instance per running service."""

    app = Klein()
    app.url_map.strict_slashes = False
    log = Logger()

    def __init__(
        self,
        *,
        clock: IReactorTime,
        config: ServiceConfig,
        event_log: EventLog,
        orchestrator: Orchestrator,
        actions: Actions,
        shutdown: Callable[[str], object],
        metrics: ServiceMetrics,
        access: DashboardAccess,
        trimmer: Trimmer,
        workers: WorkerSource | None = None,
    ) -> None:
        self._clock = clock
        self._workers = workers
        self._config = config
        self._event_log = event_log
        self._orchestrator = orchestrator
        self._actions = actions
        self._started = clock.seconds()
        self._shutdown = shutdown
        self._metrics = metrics
        self._access = access
        self._trimmer = trimmer

    def hot_routes(self) -> dict[bytes, HotRead]:
        """The reads answered past the router (service/hot.py); their routes below stay
        for ``HEAD`` and a trailing slash."""
        read = HotRead(self._event_log, self._builds, error_response)
        return {b"/api/v1/builds": read}

    @app.handle_errors(Exception)
    def _error(self, request: IRequest, failure: Failure) -> bytes:
        assert isinstance(request, Request)
        return error_response(request, failure)

    # -- service ---------------------------------------------------------------------------

    @app.route("/api/v1/health", methods=["GET"])
    @declare(
        "whether the service answers, and what it serves",
        obj(
            {
                "status": {"enum": ["ok", "unavailable"]}, "pid": {"type": "integer"},
                "version": STRING, "workspace": STRING, "active_builds": {"type": "integer"},
                "idle_timeout": {"type": "number"},
                "graph": obj({"label": STRING, "fingerprint": STRING, "loaded_at": NANOS}),
                "event_log": {**STRING, "description": "the log in use, without any password"},
                "uptime_s": {"type": "number"},
            },
            problem={**STRING, "description": "why the event log stores nothing (unavailable)"},
        ),
        public=True,
    )
    @_shielded
    async def health(self, request: Request) -> dict[str, Any]:
        problem = await self._event_log.problem()
        return {
            "status": "ok" if problem is None else "unavailable",
            **({} if problem is None else {"problem": problem}),
            "pid": os.getpid(),
            "version": self._config.version,
            "workspace": str(self._config.root),
            "active_builds": self._actions.active_builds,
            "idle_timeout": self._config.idle_timeout_s,
            "graph": self._actions.describe_graph(),
            "event_log": self._event_log.location.describe(),
            "uptime_s": round(self._clock.seconds() - self._started, 3),
        }

    @app.route("/api/v1/openapi.json", methods=["GET"])
    @declare("this document", {"type": "object"})
    @_shielded
    async def openapi_document(self, request: Request) -> dict[str, Any]:
        return contract.document(self.app)

    @app.route("/metrics", methods=["GET"])
    @declare(
        "Prometheus metrics in the text exposition format (SPEC §5.9)",
        other_answer("text/plain", "OK"),
    )
    @_shielded
    async def metrics(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return self._metrics.render()

    @app.route("/api/v1/dashboard/login-code", methods=["POST"])
    @declare(
        "a one-time dashboard login code, valid 60 s (docs/dashboard.md)",
        obj({
            "code": STRING, "login_path": STRING, "expires_in_s": {"type": "number"},
            "login_url": STRING,
        }),
    )
    @_shielded
    async def login_code(self, request: Request) -> dict[str, Any]:
        code = self._access.issue_code()
        self.log.info("dashboard login code issued")
        return {"code": code, "login_path": f"/login?code={code}", "expires_in_s": CODE_TTL_S,
                "login_url": self._access.login_url(request, code)}

    @app.route("/api/v1/service/shutdown", methods=["POST"])
    @declare(
        "stop the service (409 while builds run, unless forced)",
        json_answer(
            obj({"status": {"const": "stopping"}, "active_builds": {"type": "integer"}}),
            "stopping",
        ),
        status=202, errors=(400, 409, 413), body="ShutdownBody", body_optional=True,
    )
    @_shielded
    async def shutdown(self, request: Request) -> dict[str, Any]:
        body = r.read_json_object(request, allow_empty=True)
        r.only_fields(body, {"force"})
        force = r.boolean(body, "force")
        active = self._actions.active_builds
        if active and not force:
            raise ApiError(
                409,
                "builds_running",
                f"{active} build(s) running; send {{\"force\": true}} to cancel them and stop",
            )
        reason = "requested over the API"
        self._shutdown(f"{reason}, cancelling {active} build(s)" if active else reason)
        request.setResponseCode(202)
        return {"status": "stopping", "active_builds": active}

    @app.route("/api/v1/services", methods=["GET"])
    @declare(
        "the services sharing this event log, newest first, with their lease state (§5.8)",
        obj({"services": {"type": "array", "items": ref("Service")}}),
    )
    @_shielded
    async def services(self, request: Request) -> dict[str, Any]:
        """The services sharing this log, newest first, with their lease state (SPEC §5.8)."""
        return {"services": await self._event_log.services()}

    @app.route("/api/v1/workers", methods=["GET"])
    @declare(
        "the Celery workers reporting to this event log, by name (§10); empty for a local "
        "executor",
        obj({"workers": {"type": "array", "items": ref("Worker")}}),
    )
    @_shielded
    async def workers(self, request: Request) -> dict[str, Any]:
        """The Celery workers of this log (SPEC §10); none for a local executor."""
        return {"workers": [] if self._workers is None else await self._workers.workers()}

    # -- builds ------------------------------------------------------------------------------

    @app.route("/api/v1/cli/build", methods=["POST"])
    @app.route("/api/v1/builds", methods=["POST"])
    @declare(
        "request a build", json_answer("Accepted", "accepted"), status=202, errors=(400, 413),
        body="BuildBody",
    )
    @_shielded
    async def submit(self, request: Request) -> dict[str, Any]:
        body = r.read_json_object(request)
        r.only_fields(body, {"partitions", "force"})
        refs = _partitions(body)
        force = r.boolean(body, "force")
        build_id = await self._actions.submit(refs, force, door="API")
        url = f"/api/v1/cli/builds/{build_id}/progress"
        request.setResponseCode(202)
        request.setHeader(b"location", f"/api/v1/builds/{build_id}".encode())
        return {"build_request_id": build_id, "progress_url": url}

    @app.route("/api/v1/cli/builds/<build_id>/progress", methods=["GET"])
    @declare(
        "the build's events as Server-Sent Events (SPEC §5.6); resumes after Last-Event-ID",
        other_answer(
            "text/event-stream",
            "frames `id: <idx>`, `event: <event_type>`, `data: <event JSON>`; last "
            f"`event: {BUILD_FINISHED}`; event types: {', '.join(EVENT_TYPES)}",
        ),
        errors=(400, 404),
        parameters=[
            query("since", {"type": "integer", "minimum": 0}, "resume after this event idx"),
            query("omit", {"type": "string"},
                  "job and partition statuses (SPEC §4.1 names, comma-separated) whose events "
                  "the stream leaves out"),
            LAST_EVENT_ID,
        ],
    )
    @_shielded
    async def progress(self, request: Request, build_id: str) -> None:
        build_id = await self._full_id("build", r.path_segment(build_id, "build id"))
        await stream_progress(
            request, build_id, self._orchestrator, self._metrics, self._clock,
            self._config.keepalive_s, self._trimmer,
        )

    @app.route("/api/v1/builds", methods=["GET"])
    @declare(
        "builds, newest first", page("builds", "Build"), errors=(400,),
        parameters=[query("status", status_filter(BuildStatus)), *PAGE],
    )
    @_shielded
    async def builds(self, request: Request) -> dict[str, Any]:
        return await self._builds(request)

    def _builds(self, request: Request) -> Deferred[dict[str, Any]]:
        return self._event_log.list_builds(*_args(request, "status", "limit", "offset"))

    @app.route("/api/v1/builds/<build_id>", methods=["GET"])
    @declare("one build with its job runs and partitions", "BuildDetail", errors=(400, 404))
    @_shielded
    async def build(self, request: Request, build_id: str) -> dict[str, Any]:
        build_id = await self._full_id("build", r.path_segment(build_id, "build id"))
        return await self._found(self._event_log.get_build(build_id), "build", build_id)

    @app.route("/api/v1/builds/<build_id>/jobs", methods=["GET"])
    @declare(
        "one build at the job level: its runs per job and status, the edges between jobs",
        "BuildJobs", errors=(400, 404),
    )
    @_shielded
    async def build_jobs(self, request: Request, build_id: str) -> dict[str, Any]:
        """The build at the job level: runs per job label and status, edges between jobs."""
        build_id = await self._full_id("build", r.path_segment(build_id, "build id"))
        return await self._found(self._event_log.build_jobs(build_id), "build", build_id)

    @app.route("/api/v1/builds/<build_id>/cancel", methods=["POST"])
    @declare("cancel a running build", "BuildDetail", errors=(400, 404, 409))
    @_shielded
    async def cancel_build(self, request: Request, build_id: str) -> dict[str, Any]:
        build_id = await self._full_id("build", r.path_segment(build_id, "build id"))
        await self._actions.cancel_build(build_id)
        self.log.info("build {build_request_id} cancelled over the API", build_request_id=build_id)
        return await self._found(self._event_log.get_build(build_id), "build", build_id)

    @app.route("/api/v1/builds/<build_id>/retry", methods=["POST"])
    @declare(
        "a new build of the refs this final build requested that are not AVAILABLE now (§9)",
        json_answer("RetryAccepted", "accepted: the new build, and how many refs"),
        status=202,
        also={200: json_answer("NothingToRetry", "every ref is available: nothing to retry")},
        errors=(400, 404, 409),
    )
    @_shielded
    async def retry_build(self, request: Request, build_id: str) -> dict[str, Any]:
        """A new build of what ``build_id`` requested and is not AVAILABLE now (SPEC §9)."""
        build_id = await self._full_id("build", r.path_segment(build_id, "build id"))
        r.only_fields(r.read_json_object(request, allow_empty=True), set())
        new_id, refs = await self._actions.retry(build_id)
        if new_id is None:
            return {"build_request_id": None, "retry_of": build_id, "partitions": 0,
                    "message": f"nothing to retry: every partition build {build_id} requested "
                               "is available"}  # fmt: skip
        request.setResponseCode(202)
        request.setHeader(b"location", f"/api/v1/builds/{new_id}".encode())
        return {"build_request_id": new_id, "progress_url": f"/api/v1/cli/builds/{new_id}/progress",
                "retry_of": build_id, "partitions": len(refs),
                "message": f"retrying {len(refs)} partition(s) of build {build_id} that are not "
                           "available"}  # fmt: skip

    @app.route("/api/v1/analyze", methods=["POST"])
    @declare(
        "the job graph a build would run; nothing is run or recorded",
        obj({"job_graph": ref("JobGraph"), "graph_fingerprint": STRING}),
        errors=(400, 413), body="AnalyzeBody",
    )
    @_shielded
    async def analyze(self, request: Request) -> dict[str, Any]:
        body = r.read_json_object(request)
        r.only_fields(body, {"partitions"})
        refs = _partitions(body)
        analysis = await self._actions.analyze(refs)
        return {
            "job_graph": analysis.job_graph.to_json(),
            "graph_fingerprint": analysis.graph_fingerprint,
        }

    # -- partitions, jobs, tasks, events ------------------------------------------------------

    @app.route("/api/v1/partitions", methods=["GET"])
    @declare(
        "the partition catalog, most recently changed first", page("partitions", "Partition"),
        errors=(400,),
        parameters=[
            query("status", status_filter(PartitionStatus)),
            query("pattern", STRING, "a glob over partition refs (`*`, `?`, `[...]`)"),
            *PAGE,
        ],
    )
    @_shielded
    async def partitions(self, request: Request) -> dict[str, Any]:
        return await self._event_log.list_partitions(
            *_args(request, "status", "pattern", "limit", "offset")
        )

    @app.route("/api/v1/partitions/<ref>", methods=["GET"])
    @declare(
        "one partition: its history and producing job runs", "PartitionDetail",
        errors=(400, 404),
    )
    @_shielded
    async def partition(self, request: Request, ref: str) -> dict[str, Any]:
        ref = validate_ref(r.path_segment(ref, "partition ref"))
        return await self._found(self._event_log.get_partition(ref), "partition", ref)

    @app.route("/api/v1/datasets", methods=["GET"])
    @declare(
        "the catalog by dataset (the job that makes it), each with a status strip",
        page("datasets", "Dataset"), errors=(400,), parameters=PAGE,
    )
    @_shielded
    async def datasets(self, request: Request) -> dict[str, Any]:
        """The catalog grouped by the job that makes it, with a status strip each."""
        return await list_datasets(self._event_log, self._actions.workspace,
                                   *_args(request, "limit", "offset"))

    @app.route("/api/v1/jobs", methods=["GET"])
    @declare(
        "every job's run statistics", page("jobs", "Job"), errors=(400,), parameters=PAGE
    )
    @_shielded
    async def jobs(self, request: Request) -> dict[str, Any]:
        return await self._event_log.list_jobs(*_args(request, "limit", "offset"))

    @app.route("/api/v1/jobs/<label>", methods=["GET"])
    @declare("one job's run statistics", "Job", errors=(400, 404))
    @_shielded
    async def job(self, request: Request, label: str) -> dict[str, Any]:
        label = r.path_segment(label, "job label")
        return await self._found(self._event_log.get_job(label), "job", label)

    @app.route("/api/v1/tasks", methods=["GET"])
    @declare(
        "job runs, newest first", page("tasks", "Task"), errors=(400,),
        parameters=[
            query("build_request_id", STRING), query("job_label", STRING),
            query("status", status_filter(JobStatus)), *PAGE,
        ],
    )
    @_shielded
    async def tasks(self, request: Request) -> dict[str, Any]:
        build_id, *rest = _args(request, "build_request_id", "job_label", "status", "limit",
                                "offset")  # fmt: skip
        if build_id is not None:
            build_id = await self._full_id("build", build_id)
        return await self._event_log.list_tasks(build_id, *rest)

    @app.route("/api/v1/tasks/<task_id>", methods=["GET"])
    @declare("one job run", "Task", errors=(400, 404))
    @_shielded
    async def task(self, request: Request, task_id: str) -> dict[str, Any]:
        task_id = await self._full_id("task", r.path_segment(task_id, "task id"))
        return await self._task(task_id)

    async def _task(self, task_id: str) -> dict[str, Any]:
        """The task, naming its worker when runs go to Celery workers (SPEC §10)."""
        task = await self._found(self._event_log.get_task(task_id), "task", task_id)
        if self._workers is not None:
            task["worker"] = await self._workers.worker_of(task_id)
        return task

    @app.route("/api/v1/tasks/<task_id>/cancel", methods=["POST"])
    @declare("cancel a job run", "Task", errors=(400, 404, 409))
    @_shielded
    async def cancel_task(self, request: Request, task_id: str) -> dict[str, Any]:
        task_id = await self._full_id("task", r.path_segment(task_id, "task id"))
        await self._actions.cancel_task(task_id)
        self.log.info("task {job_run_id} cancelled over the API", job_run_id=task_id)
        return await self._task(task_id)

    @app.route("/api/v1/tasks/<task_id>/logs", methods=["GET"])
    @declare(
        "a page of the run's log lines, or (follow=true) its lines as Server-Sent Events",
        json_answer(
            obj({
                "job_run_id": STRING,
                "offset": {"type": "integer", "minimum": 0},
                "lines": {"type": "array", "items": obj(
                    {"time": NANOS, "stream": {"enum": ["stdout", "stderr"]}, "text": STRING},
                    data={"type": "object"}, continued={"type": "boolean"},
                )},
                "next_offset": {"type": "integer", "minimum": 0},
                "more": {"type": "boolean"},
            }),
            "a page; with follow=true frames `id: <line index>`, `event: log_line`, "
            "`data: <line JSON>`, last `event: log_end`",
        ),
        errors=(400, 404),
        parameters=[
            query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION,
                             "default": 0}, "the first line (an index)"),
            query("limit", {"type": "integer", "minimum": 1, "maximum": logs.MAX_LIMIT,
                            "default": logs.DEFAULT_LIMIT}),
            query("tail", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION},
                  "start this many lines before the end"),
            query("follow", {"type": "boolean", "default": False},
                  "stream the lines as Server-Sent Events until the run has ended"),
            LAST_EVENT_ID,
        ],
    )
    @_shielded
    async def task_logs(self, request: Request, task_id: str) -> dict[str, Any] | None:
        task_id = await self._full_id("task", r.path_segment(task_id, "task id"))
        await self._found(self._event_log.get_task(task_id), "task", task_id)
        state_dir = self._config.workspace.state_dir
        if not r.query_bool(request, "follow"):
            offset = r.query_int(request, "offset", 0, 0)
            tail = r.query_int(request, "tail", None, 0)
            limit = r.query_int(request, "limit", logs.DEFAULT_LIMIT, 1, logs.MAX_LIMIT)
            return await deferToThread(logs.log_page, state_dir, task_id, offset, limit, tail)
        await logs.follow(request, self._clock, self._config.keepalive_s, state_dir, task_id,
                          task_status(self._event_log, task_id))
        return None

    @app.route("/api/v1/events", methods=["GET"])
    @declare(
        "raw event-log events after `since`, oldest first",
        obj({"events": {"type": "array", "items": ref("Event")},
             "next_since": {"type": "integer"}}),
        errors=(400,),
        parameters=[
            query("since", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION,
                            "default": 0}),
            query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
            query("build_request_id", STRING), query("partition_ref", STRING),
            query("job_label", STRING),
        ],
    )
    @_shielded
    async def events(self, request: Request) -> dict[str, Any]:
        return await self._event_log.events(
            *_args(request, "since", "limit", "build_request_id", "partition_ref", "job_label")
        )

    # -- helpers -----------------------------------------------------------------------------

    async def _full_id(self, kind: str, given: str) -> str:
        """The build or task id ``given`` names, itself or as a unique prefix (SPEC §6)."""
        if kind == "build" and self._orchestrator.runs(given):
            return given  # a live build's own id: no need to wait for the busy log
        found = await self._event_log.resolve_id(kind, given)
        if len(found) == 1:
            return found[0]
        shown = ", ".join(found[:MAX_MATCHES]) + (", ..." if len(found) > MAX_MATCHES else "")
        raise r.bad_request(
            f"{kind} id prefix {given!r} is ambiguous; it matches {shown}; give more characters",
            "ambiguous_id",
        )

    async def _found(self, lookup: Awaitable[dict[str, Any] | None], kind: str, key: str) -> Any:
        found = await lookup
        if found is None:
            raise NotFound(f"no {kind} {key!r}")
        return found


async def stream_progress(
    request: Request,
    build_id: str,
    orchestrator: Orchestrator,
    metrics: ServiceMetrics,
    clock: IReactorTime,
    keepalive_s: float,
    trimmer: Trimmer,
) -> None:
    """Answer ``request`` with the progress stream of ``build_id`` (API and dashboard)."""
    since = _since(request)
    omit = _omitted(request)
    hub = orchestrator.hub
    stream = ProgressStream(
        request, clock, keepalive_s, lambda event: hub.rendered(event, event_frame), trimmer
    )
    with metrics.progress_streams.track_inprogress():
        await stream.run(
            lambda on_event, ready: hub.subscribe(build_id, since, on_event, ready, omit)
        )


def _partitions(body: dict[str, Any]) -> tuple[str, ...]:
    if "partitions" not in body:
        raise r.bad_request("'partitions' is missing: give a list of partition refs")
    given = body["partitions"]
    if isinstance(given, list) and len(given) > MAX_REFS:
        raise too_many(f"'partitions' holds {len(given):,} refs")
    return validate_refs(given)


def _since(request: Request) -> int:
    """Where a progress stream resumes: ``Last-Event-ID`` if sent, else ``?since=``, else 0."""
    header = request.getHeader(b"last-event-id")
    if header is not None:
        return r.whole_number(header.decode("latin-1"), "Last-Event-ID", 0)
    return r.query_int(request, "since", 0, 0)


OMITTABLE = frozenset(s.value for s in (*JobStatus, *PartitionStatus))
"""What a progress stream may leave out: events of these statuses (a build's own come always,
its last one ending the stream)."""


def _omitted(request: Request) -> frozenset[str]:
    """The statuses ``?omit=`` names (comma-separated), whose events a stream leaves out."""
    text = r.query(request, "omit")
    names = frozenset(n.strip() for n in (text or "").split(",") if n.strip())
    unknown = sorted(names - OMITTABLE)
    if unknown:
        raise r.bad_request(
            f"'omit' names {', '.join(map(repr, unknown))}: give job and partition statuses "
            f"as SPEC §4.1 spells them, of {', '.join(sorted(OMITTABLE))}"
        )
    return names


def _args(request: Request, *names: str) -> list[str | None]:
    """Query parameters, in order, as the event log's read methods take (and check) them."""
    return [r.query(request, name) for name in names]


def task_status(event_log: EventLog, task_id: str) -> logs.TaskStatus:
    """What a followed log asks of its run: its status now (None once unknown)."""

    async def status() -> str | None:
        task = await event_log.get_task(task_id)
        return None if task is None else task["status"]

    return status
