"""The HTTP API (SPEC §5.4, §5.5): thin routes over the event log's queries and the orchestrator.

Every handler runs shielded (:func:`_shielded`): when a client disconnects, Klein cancels the
route's Deferred, and that cancellation must never reach a Deferred of the orchestrator or the
event log (a build must not be cancelled because its requester went away).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute

from databuild.bel import EventLog, EventLogError, IllegalTransition, StoreUnavailable
from databuild.bel.queries import MAX_MATCHES
from databuild.errors import Conflict, DataBuildError, NotFound
from databuild.graph.source import GraphSource
from databuild.model import validate_ref, validate_refs
from databuild.orchestrator import Orchestrator, Subscription
from databuild.service import logs, openapi
from databuild.service import responses as r
from databuild.service.dashboard.access import CODE_TTL_S, DashboardAccess
from databuild.service.datasets import list_datasets
from databuild.service.hot import HotRead
from databuild.service.idle import IdleTimer
from databuild.service.metrics import CONTENT_TYPE, ServiceMetrics
from databuild.service.responses import ApiError
from databuild.service.settings import ServiceConfig
from databuild.service.sse import ProgressStream

Handler = Callable[..., Awaitable[object]]


def _shielded(handler: Handler) -> Callable[..., Deferred[object]]:
    """Run ``handler`` to its end whatever happens to the Deferred Klein gets.

    Klein gets a fresh Deferred; cancelling it does not cancel the handler. A ``dict`` result
    is answered as JSON with status 200 (or the status the handler set).
    """

    @functools.wraps(handler)
    def route(self: Api, request: IRequest, **kwargs: Any) -> Deferred[object]:
        outer: Deferred[object] = Deferred()
        inner = ensureDeferred(handler(self, request, **kwargs))

        def deliver(result: object) -> None:
            if not outer.called:
                if isinstance(result, dict):
                    result = r.respond_json(request, request.code, result)
                outer.callback(result)

        def fail(failure: Failure) -> None:
            if not outer.called:
                outer.errback(failure)

        inner.addCallbacks(deliver, fail)
        return outer

    return route


shielded = _shielded
"""The same, for the dashboard's routes."""


# A DataBuildError is the client's fault (400) unless it is one of these.
_STATUS_OF_ERROR: tuple[tuple[type[DataBuildError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (StoreUnavailable, 503),
    (EventLogError, 500),
    (IllegalTransition, 500),
)


def error_response(request: IRequest, failure: Failure) -> bytes:
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
        graph: GraphSource,
        idle: IdleTimer,
        shutdown: Callable[[str], object],
        metrics: ServiceMetrics,
        access: DashboardAccess,
    ) -> None:
        self._clock = clock
        self._config = config
        self._log = event_log
        self._orchestrator = orchestrator
        self._graph = graph
        self._started = clock.seconds()
        self._idle = idle
        self._shutdown = shutdown
        self._metrics = metrics
        self._access = access

    def hot_routes(self) -> dict[bytes, HotRead]:
        """The reads answered past the router (service/hot.py); their routes below stay
        for ``HEAD`` and a trailing slash."""
        read = HotRead(self._log, self._builds, error_response)
        return {b"/api/v1/builds": read}

    @app.handle_errors(Exception)
    def _error(self, request: IRequest, failure: Failure) -> bytes:
        return error_response(request, failure)

    # -- service ---------------------------------------------------------------------------

    @app.route("/api/v1/health", methods=["GET"])
    @_shielded
    async def health(self, request: IRequest) -> dict[str, Any]:
        return {
            "status": "ok",
            "pid": os.getpid(),
            "version": self._config.version,
            "workspace": str(self._config.root),
            "active_builds": self._orchestrator.active_builds,
            "idle_timeout": self._config.idle_timeout_s,
            "graph": self._graph.describe(),
            "event_log": self._log.location.describe(),
            "uptime_s": round(self._clock.seconds() - self._started, 3),
        }

    @app.route("/api/v1/openapi.json", methods=["GET"])
    @_shielded
    async def openapi_document(self, request: IRequest) -> dict[str, Any]:
        return openapi.document()

    @app.route("/metrics", methods=["GET"])
    @_shielded
    async def metrics(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return self._metrics.render()

    @app.route("/api/v1/dashboard/login-code", methods=["POST"])
    @_shielded
    async def login_code(self, request: IRequest) -> dict[str, Any]:
        code = self._access.issue_code()
        self.log.info("dashboard login code issued")
        return {"code": code, "login_path": f"/login?code={code}", "expires_in_s": CODE_TTL_S}

    @app.route("/api/v1/service/shutdown", methods=["POST"])
    @_shielded
    async def shutdown(self, request: IRequest) -> dict[str, Any]:
        body = r.read_json_object(request, allow_empty=True)
        r.only_fields(body, {"force"})
        force = r.boolean(body, "force")
        active = self._orchestrator.active_builds
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
    @_shielded
    async def services(self, request: IRequest) -> dict[str, Any]:
        """The services sharing this log, newest first, with their lease state (SPEC §5.8)."""
        return {"services": await self._log.services()}

    # -- builds ------------------------------------------------------------------------------

    @app.route("/api/v1/cli/build", methods=["POST"])
    @app.route("/api/v1/builds", methods=["POST"])
    @_shielded
    async def submit(self, request: IRequest) -> dict[str, Any]:
        body = r.read_json_object(request)
        r.only_fields(body, {"partitions", "force"})
        refs = _partitions(body)
        force = r.boolean(body, "force")
        build_id = await self._orchestrator.submit(refs, force, self._graph.current())
        self.log.info(
            "build {build_request_id} requested: {partitions}{forced}",
            build_request_id=build_id,
            partitions=list(refs),
            forced=" (forced)" if force else "",
        )
        self._hold_while_running(build_id)
        url = f"/api/v1/cli/builds/{build_id}/progress"
        request.setResponseCode(202)
        request.setHeader(b"location", f"/api/v1/builds/{build_id}".encode())
        return {"build_request_id": build_id, "progress_url": url}

    @app.route("/api/v1/cli/builds/<build_id>/progress", methods=["GET"])
    @_shielded
    async def progress(self, request: IRequest, build_id: str) -> None:
        build_id = await self._full_id("build", r.path_segment(build_id, "build id"))
        await stream_progress(
            request, build_id, self._orchestrator, self._metrics, self._clock,
            self._config.keepalive_s,
        )

    @app.route("/api/v1/builds", methods=["GET"])
    @_shielded
    async def builds(self, request: IRequest) -> dict[str, Any]:
        return await self._builds(request)

    def _builds(self, request: IRequest) -> Deferred[dict[str, Any]]:
        return self._log.list_builds(*_args(request, "status", "limit", "offset"))

    @app.route("/api/v1/builds/<build_id>", methods=["GET"])
    @_shielded
    async def build(self, request: IRequest, build_id: str) -> dict[str, Any]:
        build_id = await self._full_id("build", r.path_segment(build_id, "build id"))
        return await self._found(self._log.get_build(build_id), "build", build_id)

    @app.route("/api/v1/builds/<build_id>/jobs", methods=["GET"])
    @_shielded
    async def build_jobs(self, request: IRequest, build_id: str) -> dict[str, Any]:
        """The build at the job level: runs per job label and status, edges between jobs."""
        build_id = await self._full_id("build", r.path_segment(build_id, "build id"))
        return await self._found(self._log.build_jobs(build_id), "build", build_id)

    @app.route("/api/v1/builds/<build_id>/cancel", methods=["POST"])
    @_shielded
    async def cancel_build(self, request: IRequest, build_id: str) -> dict[str, Any]:
        build_id = await self._full_id("build", r.path_segment(build_id, "build id"))
        await maybeDeferred(self._orchestrator.cancel_build, build_id)
        self.log.info("build {build_request_id} cancelled over the API", build_request_id=build_id)
        return await self._found(self._log.get_build(build_id), "build", build_id)

    @app.route("/api/v1/analyze", methods=["POST"])
    @_shielded
    async def analyze(self, request: IRequest) -> dict[str, Any]:
        body = r.read_json_object(request)
        r.only_fields(body, {"partitions"})
        refs = _partitions(body)
        workspace = self._graph.current()
        graph = await self._orchestrator.analyze(refs, workspace)
        return {"job_graph": graph.to_json(), "graph_fingerprint": workspace.fingerprint}

    # -- partitions, jobs, tasks, events ------------------------------------------------------

    @app.route("/api/v1/partitions", methods=["GET"])
    @_shielded
    async def partitions(self, request: IRequest) -> dict[str, Any]:
        return await self._log.list_partitions(
            *_args(request, "status", "pattern", "limit", "offset")
        )

    @app.route("/api/v1/partitions/<ref>", methods=["GET"])
    @_shielded
    async def partition(self, request: IRequest, ref: str) -> dict[str, Any]:
        ref = validate_ref(r.path_segment(ref, "partition ref"))
        return await self._found(self._log.get_partition(ref), "partition", ref)

    @app.route("/api/v1/datasets", methods=["GET"])
    @_shielded
    async def datasets(self, request: IRequest) -> dict[str, Any]:
        """The catalog grouped by the job that makes it, with a status strip each."""
        return await list_datasets(self._log, self._graph, *_args(request, "limit", "offset"))

    @app.route("/api/v1/jobs", methods=["GET"])
    @_shielded
    async def jobs(self, request: IRequest) -> dict[str, Any]:
        return await self._log.list_jobs(*_args(request, "limit", "offset"))

    @app.route("/api/v1/jobs/<label>", methods=["GET"])
    @_shielded
    async def job(self, request: IRequest, label: str) -> dict[str, Any]:
        label = r.path_segment(label, "job label")
        return await self._found(self._log.get_job(label), "job", label)

    @app.route("/api/v1/tasks", methods=["GET"])
    @_shielded
    async def tasks(self, request: IRequest) -> dict[str, Any]:
        build_id, *rest = _args(request, "build_request_id", "job_label", "status", "limit",
                                "offset")  # fmt: skip
        if build_id is not None:
            build_id = await self._full_id("build", build_id)
        return await self._log.list_tasks(build_id, *rest)

    @app.route("/api/v1/tasks/<task_id>", methods=["GET"])
    @_shielded
    async def task(self, request: IRequest, task_id: str) -> dict[str, Any]:
        task_id = await self._full_id("task", r.path_segment(task_id, "task id"))
        return await self._found(self._log.get_task(task_id), "task", task_id)

    @app.route("/api/v1/tasks/<task_id>/cancel", methods=["POST"])
    @_shielded
    async def cancel_task(self, request: IRequest, task_id: str) -> dict[str, Any]:
        task_id = await self._full_id("task", r.path_segment(task_id, "task id"))
        await maybeDeferred(self._orchestrator.cancel_task, task_id)
        self.log.info("task {job_run_id} cancelled over the API", job_run_id=task_id)
        return await self._found(self._log.get_task(task_id), "task", task_id)

    @app.route("/api/v1/tasks/<task_id>/logs", methods=["GET"])
    @_shielded
    async def task_logs(self, request: IRequest, task_id: str) -> dict[str, Any] | None:
        task_id = await self._full_id("task", r.path_segment(task_id, "task id"))
        await self._found(self._log.get_task(task_id), "task", task_id)
        state_dir = self._config.workspace.state_dir
        if not r.query_bool(request, "follow"):
            offset = r.query_int(request, "offset", 0, 0)
            tail = r.query_int(request, "tail", None, 0)
            limit = r.query_int(request, "limit", logs.DEFAULT_LIMIT, 1, logs.MAX_LIMIT)
            return await deferToThread(logs.log_page, state_dir, task_id, offset, limit, tail)
        await logs.follow(request, self._clock, self._config.keepalive_s, state_dir, task_id,
                          task_status(self._log, task_id))
        return None

    @app.route("/api/v1/events", methods=["GET"])
    @_shielded
    async def events(self, request: IRequest) -> dict[str, Any]:
        return await self._log.events(
            *_args(request, "since", "limit", "build_request_id", "partition_ref", "job_label")
        )

    # -- helpers -----------------------------------------------------------------------------

    async def _full_id(self, kind: str, given: str) -> str:
        """The build or task id ``given`` names, itself or as a unique prefix (SPEC §6)."""
        found = await self._log.resolve_id(kind, given)
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

    def _hold_while_running(self, build_id: str) -> None:
        """Keep the service from idling out until the build finishes."""
        release = self._idle.hold()

        def watch(subscription: Subscription) -> None:
            subscription.finished.addBoth(lambda _: (subscription.close(), release()))

        def failed(failure: Failure) -> None:
            release()
            self.log.failure("cannot watch build {build_request_id}", failure,
                             build_request_id=build_id)

        self._orchestrator.hub.subscribe(build_id, 0, lambda _: None).addCallbacks(
            watch, failed
        )


async def stream_progress(
    request: IRequest,
    build_id: str,
    orchestrator: Orchestrator,
    metrics: ServiceMetrics,
    clock: IReactorTime,
    keepalive_s: float,
) -> None:
    """Answer ``request`` with the progress stream of ``build_id`` (API and dashboard)."""
    since = _since(request)
    stream = ProgressStream(request, clock, keepalive_s)
    hub = orchestrator.hub
    with metrics.progress_streams.track_inprogress():
        await stream.run(lambda on_event: hub.subscribe(build_id, since, on_event))


def _partitions(body: dict[str, Any]) -> tuple[str, ...]:
    if "partitions" not in body:
        raise r.bad_request("'partitions' is missing: give a list of partition refs")
    return validate_refs(body["partitions"])


def _since(request: IRequest) -> int:
    """Where a progress stream resumes: ``Last-Event-ID`` if sent, else ``?since=``, else 0."""
    header = request.getHeader(b"last-event-id")
    if header is not None:
        return r.whole_number(header.decode("latin-1"), "Last-Event-ID", 0)
    return r.query_int(request, "since", 0, 0)


def _args(request: IRequest, *names: str) -> list[str | None]:
    """Query parameters, in order, as the event log's read methods take (and check) them."""
    return [r.query(request, name) for name in names]


def task_status(event_log: EventLog, task_id: str) -> logs.TaskStatus:
    """What a followed log asks of its run: its status now (None once unknown)."""

    async def status() -> str | None:
        task = await event_log.get_task(task_id)
        return None if task is None else task["status"]

    return status
