"""The dashboard's routes (SPEC §8): pages rendered from the event log, and the actions.

The edge (``databuild.service.edge``) admits a request here only with a valid session cookie
(or to a public page), and a POST only from the dashboard's own origin. Every page is a view
over what the API offers; the actions go through the same ``service.actions.Actions`` as the
API's routes (the current graph, the idle timer held while a build runs).
"""

from __future__ import annotations

from collections.abc import Awaitable
from importlib.resources import files
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Request
from twisted.web.static import File
from werkzeug.exceptions import HTTPException

from databuild.bel import EventLog
from databuild.bel.queries import DEFAULT_LIMIT, MAX_LIMIT
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.errors import Conflict, DataBuildError, NotFound
from databuild.model import validate_ref, validate_refs
from databuild.orchestrator import Orchestrator
from databuild.refs import expand
from databuild.service import logs
from databuild.service import responses as r
from databuild.service.actions import Actions
from databuild.service.api import shielded, stream_progress, task_status
from databuild.service.dashboard.access import DashboardAccess
from databuild.service.dashboard.templates import render, segment
from databuild.service.datasets import list_datasets
from databuild.service.metrics import ServiceMetrics
from databuild.service.responses import ApiError
from databuild.service.settings import ServiceConfig
from databuild.service.trim import Trimmer

HTML = b"text/html; charset=utf-8"
TREND_RUNS = 50
"""How many of a job's latest runs its duration trend shows."""
RUN_LEVEL_LIMIT = 200
"""A build of more runs than this is drawn at the job level (SPEC §8)."""
SHOWN_REFS = 12
"""How many of a build's requested refs its page lists."""


class StaticFiles(File):
    """The package's scripts and stylesheets; no directory listings."""

    def directoryListing(self) -> Resource:
        return NoResource("no such file")


def _page_args(request: Request) -> tuple[int, int]:
    return (
        r.query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        r.query_int(request, "offset", 0, 0, 2**62),
    )


def _status(request: Request, kind: type[BuildStatus | JobStatus | PartitionStatus]) -> str:
    text = r.query(request, "status")
    return "" if text is None else kind.parse(text).value


def _patterns(request: Request) -> list[str]:
    """The ref patterns of a form's ``refs`` text (whitespace between them)."""
    return (r.query(request, "refs") or "").split()


def _redirect(request: Request, location: str) -> bytes:
    request.setResponseCode(303)
    request.setHeader(b"location", location.encode("utf-8"))
    return b""


class Dashboard:
    """The dashboard of one service."""

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
        access: DashboardAccess,
        metrics: ServiceMetrics,
        trimmer: Trimmer,
    ) -> None:
        self._clock = clock
        self._config = config
        self._event_log = event_log
        self._orchestrator = orchestrator
        self._actions = actions
        self._access = access
        self._metrics = metrics
        self._trimmer = trimmer

    def _page(self, request: Request, template: str, **context: Any) -> bytes:
        request.setHeader(b"content-type", HTML)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        )
        return render(template, workspace=str(self._config.root), path=request.path.decode(),
                      **context)

    @app.handle_errors(Exception)
    def _error(self, request: IRequest, failure: Failure) -> bytes:
        assert isinstance(request, Request)
        e = failure.value
        if isinstance(e, ApiError):
            status, message = e.status, e.message
        elif isinstance(e, HTTPException):
            status, message = e.code or 500, e.description or e.name
        elif isinstance(e, DataBuildError):
            status = 404 if isinstance(e, NotFound) else 409 if isinstance(e, Conflict) else 400
            message = str(e)
        else:
            self.log.failure("dashboard error answering {path}", failure,
                             path=request.path.decode("ascii", "replace"))
            status, message = 500, f"internal error: {type(e).__name__}"
        request.setResponseCode(status)
        return self._page(request, "error.html", status=status, message=message)

    # -- access ----------------------------------------------------------------------------

    @app.route("/welcome", methods=["GET"])
    def welcome(self, request: Request) -> bytes:
        return self._page(request, "welcome.html")

    @app.route("/login", methods=["GET"])
    def login(self, request: Request) -> bytes:
        code = r.query(request, "code") or ""
        if self._access.elsewhere(request):  # no cookie for this name: on to the dashboard's
            fresh = self._access.exchange(code)
            if fresh is not None:
                return _redirect(request, self._access.login_url(request, fresh))
        session = self._access.redeem(code)
        if session is None:
            request.setResponseCode(403)
            return self._page(request, "welcome.html", refused=True)
        self._access.set_cookie(request, session)
        self.log.info("dashboard session opened")
        return _redirect(request, "/")

    @app.route("/ui/alive", methods=["GET"])
    def alive(self, request: Request) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"cache-control", b"no-store")
        return b""

    @app.route("/static/", branch=True)
    def static(self, request: Request) -> File:
        return StaticFiles(str(files("databuild.service.dashboard") / "static"))

    # -- pages -----------------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    @shielded
    async def home(self, request: Request) -> bytes:
        recent = (await self._event_log.list_builds(None, 100, 0))["builds"]
        active = [b for b in recent if not BuildStatus(b["status"]).final]
        failed = await self._event_log.failed_partitions(10, 0)
        jobs = await self._event_log.list_jobs(20, 0)
        return self._page(request, "home.html", active=active, recent=recent[:20],
                          failed=failed["partitions"], jobs=jobs["jobs"])

    @app.route("/builds", methods=["GET"])
    @shielded
    async def builds(self, request: Request) -> bytes:
        limit, offset = _page_args(request)
        status = _status(request, BuildStatus)
        found = await self._event_log.list_builds(status or None, limit, offset)
        return self._page(request, "builds.html", builds=found["builds"], status=status,
                          statuses=list(BuildStatus), limit=limit, offset=offset)

    @app.route("/builds/<build_id>", methods=["GET"])
    @shielded
    async def build(self, request: Request, build_id: str) -> bytes:
        build_id = r.path_segment(build_id, "build id")
        build = await self._found(self._event_log.build_with_retries(build_id), "build",
                                  build_id)
        return self._page(request, "build.html", build=build,
                          final=BuildStatus(build["status"]).final,
                          run_level_limit=RUN_LEVEL_LIMIT, shown_refs=SHOWN_REFS)

    @app.route("/builds/<build_id>/cancel", methods=["POST"])
    @shielded
    async def cancel(self, request: Request, build_id: str) -> bytes:
        build_id = r.path_segment(build_id, "build id")
        await self._actions.cancel_build(build_id)
        self.log.info("build {build_request_id} cancelled from the dashboard",
                      build_request_id=build_id)
        return _redirect(request, f"/builds/{segment(build_id)}")

    @app.route("/partitions", methods=["GET"])
    @shielded
    async def partitions(self, request: Request) -> bytes:
        limit, offset = _page_args(request)
        status = _status(request, PartitionStatus)
        pattern = r.query(request, "pattern") or ""
        searched = bool(status or pattern)
        if searched:
            found = await self._event_log.list_partitions(status or None, pattern or None,
                                                          limit, offset)
        else:
            found = await list_datasets(self._event_log, self._actions.workspace, limit,
                                        offset)
        return self._page(request, "partitions.html", found=found, searched=searched,
                          status=status, pattern=pattern, statuses=list(PartitionStatus),
                          limit=limit, offset=offset)

    @app.route("/partitions/<ref>", methods=["GET"])
    @shielded
    async def partition(self, request: Request, ref: str) -> bytes:
        ref = validate_ref(r.path_segment(ref, "partition ref"))
        found = await self._event_log.get_partition(ref)
        return self._page(request, "partition.html", ref=ref, partition=found)

    @app.route("/partitions/build", methods=["POST"])
    @shielded
    async def request_build(self, request: Request) -> bytes:
        given = [ref.decode("utf-8") for ref in request.args.get(b"ref", []) if ref.strip()]
        # The form's text: brace patterns (SPEC §6), up to 100,000 refs: off the reactor.
        given += await deferToThread(expand, _patterns(request))
        refs = validate_refs(given) if given else ()
        if not refs:
            raise r.bad_request("give at least one partition ref to build")
        force = r.query(request, "force") == "true"
        build_id = await self._actions.submit(refs, force, door="dashboard")
        return _redirect(request, f"/builds/{segment(build_id)}")

    @app.route("/jobs", methods=["GET"])
    @shielded
    async def jobs(self, request: Request) -> bytes:
        limit, offset = _page_args(request)
        found = await self._event_log.list_jobs(limit, offset)
        return self._page(request, "jobs.html", jobs=found["jobs"], limit=limit, offset=offset)

    @app.route("/jobs/<label>", methods=["GET"])
    @shielded
    async def job(self, request: Request, label: str) -> bytes:
        label = r.path_segment(label, "job label")
        limit, offset = _page_args(request)
        job = await self._found(self._event_log.get_job(label), "job", label)
        runs = (await self._event_log.list_tasks(None, label, None, limit, offset))["tasks"]
        trend = (await self._event_log.list_tasks(None, label, None, TREND_RUNS, 0))["tasks"]
        durations = [t["duration_s"] for t in reversed(trend) if t["duration_s"] is not None]
        return self._page(request, "job.html", job=job, runs=runs, durations=durations,
                          limit=limit, offset=offset)

    @app.route("/tasks/<task_id>", methods=["GET"])
    @shielded
    async def task(self, request: Request, task_id: str) -> bytes:
        task_id = r.path_segment(task_id, "task id")
        task = await self._found(self._event_log.get_task(task_id), "task", task_id)
        return self._page(request, "task.html", task=task,
                          final=JobStatus(task["status"]).final)

    @app.route("/analyze", methods=["GET"])
    @shielded
    async def analyze(self, request: Request) -> bytes:
        text = r.query(request, "refs") or ""
        refs = await deferToThread(expand, text.split())
        graph = None
        if refs:
            graph = (await self._actions.analyze(validate_refs(refs))).job_graph.to_json()
        return self._page(request, "analyze.html", refs=text, graph=graph)

    # -- live data for the pages' scripts ----------------------------------------------------

    @app.route("/ui/builds/<build_id>/events", methods=["GET"])
    @shielded
    async def events(self, request: Request, build_id: str) -> None:
        await stream_progress(
            request, r.path_segment(build_id, "build id"), self._orchestrator, self._metrics,
            self._clock, self._config.keepalive_s, self._trimmer,
        )

    @app.route("/ui/builds/<build_id>/jobs", methods=["GET"])
    @shielded
    async def build_jobs(self, request: Request, build_id: str) -> bytes:
        build_id = r.path_segment(build_id, "build id")
        found = await self._found(self._event_log.build_jobs(build_id), "build", build_id)
        return r.respond_json(request, 200, found)

    @app.route("/ui/tasks", methods=["GET"])
    @shielded
    async def tasks(self, request: Request) -> bytes:
        limit, offset = _page_args(request)
        found = await self._event_log.list_tasks(
            r.query(request, "build_request_id"), r.query(request, "job_label"),
            r.query(request, "status"), limit, offset,
        )
        return r.respond_json(request, 200, found)

    @app.route("/ui/tasks/<task_id>/logs", methods=["GET"])
    @shielded
    async def task_logs(self, request: Request, task_id: str) -> None:
        """The run's log followed live (SSE), as ``GET /api/v1/tasks/{id}/logs?follow=true``."""
        task_id = r.path_segment(task_id, "task id")
        await self._found(self._event_log.get_task(task_id), "task", task_id)
        await logs.follow(request, self._clock, self._config.keepalive_s,
                          self._config.workspace.state_dir, task_id,
                          task_status(self._event_log, task_id))

    async def _found(self, lookup: Awaitable[dict[str, Any] | None], kind: str, key: str) -> Any:
        found = await lookup
        if found is None:
            raise NotFound(f"no {kind} {key!r}")
        return found
