"""The commands of ``databuild`` (SPEC §6), each an ``async`` function of a ``Context``."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from attrs import define
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from databuild.cli import render
from databuild.cli.client import ANALYZE_TIMEOUT_S, Answer, ApiClient, segment
from databuild.cli.discovery import Discovery, Service
from databuild.cli.exits import (
    BUILD_EXIT_CODES,
    CANCELLED,
    OK,
    UNAVAILABLE,
    USAGE,
    CliError,
    say,
)
from databuild.cli.servicefiles import Launch, resolve_workspace

if TYPE_CHECKING:
    from databuild.cli.progress import Display

CANCEL_SEND_S = 1.0
RESTART_POLL_S = 0.5


@define
class Context:
    """What a command works with: its arguments, the world around it, and its outputs."""

    reactor: Any
    args: argparse.Namespace
    environ: Mapping[str, str]
    cwd: Path
    out: TextIO
    err: TextIO
    prestarted: tuple[int, Launch] | None = None
    on_interrupt: Callable[[], None] | None = None
    _discovery: Discovery | None = None

    @property
    def json(self) -> bool:
        """Whether output is for programs (``--format json``)."""
        return self.args.format == "json"

    def say(self, text: str) -> None:
        """A remark for people, on stderr."""
        say(self.err, text)

    def print(self, text: str) -> None:
        """One line of output, on stdout."""
        self.out.write(text + "\n")
        self.out.flush()

    @property
    def discovery(self) -> Discovery:
        """How this command finds (or starts) the service; made on first use."""
        if self._discovery is None:
            workspace = None
            if not self.environ.get("DATABUILD_SERVICE_URL"):
                workspace = resolve_workspace(self.args.workspace, self.environ, self.cwd)
            self._discovery = Discovery(
                self.reactor, workspace, self.environ, self.say, self.prestarted
            )
        return self._discovery

    async def service(self) -> Service:
        """The workspace's service, started if none answers."""
        service = await self.discovery.locate(start=True)
        assert service is not None
        return service

    def show(self, answer: Answer, table: Callable[[Any], str]) -> int:
        """Print an API document: as it came (``json``) or as a table (its text escaped)."""
        if self.json:
            self.print(answer.raw.decode("utf-8", errors="replace").rstrip("\n"))
        else:
            self.print(table(render.printable(answer.doc)))
        return OK


Command = Callable[[Context], Awaitable[int]]


# -- reading ------------------------------------------------------------------------------------


def _page(args: argparse.Namespace, **params: object) -> dict[str, object]:
    return {**params, "limit": args.limit, "offset": args.offset}


async def _get(ctx: Context, path: str, params: Mapping[str, object] | None,
               table: Callable[[Any], str]) -> int:
    return ctx.show(await ctx.discovery.read(path, params), table)


def _listing(key: str, offset: int) -> Callable[[Any], str]:
    return lambda doc: render.listing(doc, key, offset)


async def builds_list(ctx: Context) -> int:
    a = ctx.args
    params = _page(a, status=a.status)
    return await _get(ctx, "/api/v1/builds", params, _listing("builds", a.offset))


async def builds_show(ctx: Context) -> int:
    return await _get(ctx, f"/api/v1/builds/{segment(ctx.args.id)}", None, render.details)


async def partitions_list(ctx: Context) -> int:
    a = ctx.args
    params = _page(a, status=a.status, pattern=a.pattern)
    return await _get(ctx, "/api/v1/partitions", params, _listing("partitions", a.offset))


async def partitions_show(ctx: Context) -> int:
    return await _get(ctx, f"/api/v1/partitions/{segment(ctx.args.ref)}", None, render.details)


async def jobs_list(ctx: Context) -> int:
    a = ctx.args
    return await _get(ctx, "/api/v1/jobs", _page(a), _listing("jobs", a.offset))


async def jobs_show(ctx: Context) -> int:
    return await _get(ctx, f"/api/v1/jobs/{segment(ctx.args.label)}", None, render.details)


async def tasks_list(ctx: Context) -> int:
    a = ctx.args
    params = _page(a, build_request_id=a.build, job_label=a.job, status=a.status)
    return await _get(ctx, "/api/v1/tasks", params, _listing("tasks", a.offset))


async def workers_list(ctx: Context) -> int:
    return await _get(ctx, "/api/v1/workers", None, _listing("workers", 0))


async def tasks_show(ctx: Context) -> int:
    return await _get(ctx, f"/api/v1/tasks/{segment(ctx.args.id)}", None, render.details)


async def tasks_logs(ctx: Context) -> int:
    """Print a run's log page by page as it comes (``--format json``: one record a line;
    ``--raw``: the text alone, as the job printed it)."""
    service = await ctx.service()

    def show(raw: str, line: dict[str, Any]) -> None:
        if ctx.args.raw:
            ctx.out.write(render.raw_text(line))
            ctx.out.flush()
        else:
            ctx.print(raw if ctx.json else render.log_line(render.printable(line)))

    if ctx.args.follow:
        from databuild.cli.stream import LogFollower

        follower = LogFollower(
            ctx.reactor, service.client, ctx.args.id, show,
            lambda: _reconnect(ctx, follower.client), ctx.args.tail,
        )  # fmt: skip
        await follower.follow()
        return OK
    path = f"/api/v1/tasks/{segment(ctx.args.id)}/logs"
    params: dict[str, object] = {"tail": ctx.args.tail}
    printed = False
    while True:
        doc = (await service.client.get(path, params)).doc
        for line in doc["lines"]:
            show(json.dumps(line), line)
            printed = True
        if not doc["more"]:
            break
        params = {"offset": doc["next_offset"]}
    if not printed and not (ctx.json or ctx.args.raw):
        ctx.print("no log lines")
    return OK


async def analyze(ctx: Context) -> int:
    service = await ctx.service()
    body = {"partitions": ctx.args.refs}
    answer = await service.client.post("/api/v1/analyze", body, timeout=ANALYZE_TIMEOUT_S)
    return ctx.show(answer, render.job_graph)


# -- cancelling ---------------------------------------------------------------------------------


def _cancelled(kind: str) -> Callable[[Any], str]:
    def table(doc: Any) -> str:
        ident = doc.get("build_request_id" if kind == "build" else "job_run_id", "")
        return f"cancel requested for {kind} {ident} ({render.short_status(doc.get('status'))})"

    return table


async def builds_cancel(ctx: Context) -> int:
    service = await ctx.service()
    answer = await service.client.post(f"/api/v1/builds/{segment(ctx.args.id)}/cancel")
    return ctx.show(answer, _cancelled("build"))


async def tasks_cancel(ctx: Context) -> int:
    service = await ctx.service()
    answer = await service.client.post(f"/api/v1/tasks/{segment(ctx.args.id)}/cancel")
    return ctx.show(answer, _cancelled("task"))


# -- progress -----------------------------------------------------------------------------------


def _display(ctx: Context, build_request_id: str, requested: int) -> Display:
    """How the build's progress is shown; ``requested``: how many refs the CLI asked for
    (0: not known before its events tell it)."""
    from databuild.cli.progress import BuildProgress, JsonDisplay, LiveDisplay, PlainDisplay

    if ctx.json:
        return JsonDisplay(ctx.out)
    progress = BuildProgress(build_request_id, requested=requested)
    if ctx.out.isatty():
        return LiveDisplay(ctx.out, progress, ctx.reactor.callLater)
    return PlainDisplay(ctx.out, progress)


async def _reconnect(ctx: Context, client: ApiClient) -> ApiClient | None:
    """After a dropped stream: a live service to resume from (never a new one)."""
    if ctx.environ.get("DATABUILD_SERVICE_URL"):
        try:
            await client.health()
        except CliError:
            return None
        return client
    service = await ctx.discovery.running()
    return None if service is None else service.client


async def _watch(
    ctx: Context, service: Service, build_request_id: str, *, owner: bool, requested: int = 0
) -> int:
    """Stream a build to its end. The ``owner`` (``build``) cancels on the first Ctrl-C and
    stops waiting on the second; anyone else (``tail``) detaches on the first.

    The service answers a cancel request only once the build has ended, a moment after the
    stream said so; the CLI waits ``CANCEL_SEND_S`` at most for that answer (after a second
    Ctrl-C, time enough for the request to leave, so that a quick double Ctrl-C still cancels).
    Once it stops waiting it stops listening too: leaving closes the request's connection, and
    that says nothing about the cancellation.
    """
    from databuild.cli.stream import Follower

    display = _display(ctx, build_request_id, requested)

    def shown(raw: str, doc: dict[str, Any]) -> dict[str, Any]:
        return doc if ctx.json else render.printable_json(raw, doc)

    follower = Follower(
        ctx.reactor, service.client, build_request_id,
        lambda raw, event: display.event(raw, shown(raw, event)),
        lambda: _reconnect(ctx, follower.client),
        display.wants, display.omit,
    )  # fmt: skip
    interrupts = 0
    cancelling: Deferred[None] | None = None
    listening = True

    async def cancel() -> None:
        path = f"/api/v1/builds/{segment(build_request_id)}/cancel"
        try:
            await follower.client.post(path)
        except CliError as e:
            if listening:
                ctx.say(f"could not cancel build {build_request_id}: {e.message}")

    def interrupted() -> None:
        nonlocal interrupts, cancelling
        interrupts += 1
        display.close()
        if not owner:
            ctx.say(f"detached from build {build_request_id}; it goes on")
            follower.detach()
        elif interrupts == 1:
            ctx.say(f"cancelling build {build_request_id} (Ctrl-C again to stop waiting)")
            cancelling = ensureDeferred(cancel())
        else:
            ctx.say(f"stopped waiting for build {build_request_id}")
            follower.detach()

    ctx.on_interrupt = interrupted  # until the end: a late Ctrl-C must not kill the CLI
    try:
        finished = await follower.follow()
        display.close()
        if finished is not None:
            display.finished(finished[0], shown(*finished))
        if cancelling is not None:
            sent: Deferred[None] = deferLater(ctx.reactor, CANCEL_SEND_S)
            await DeferredList([cancelling, sent], fireOnOneCallback=True, consumeErrors=True)
            sent.cancel()
            listening = False
    finally:
        ctx.on_interrupt = None
        display.close()
    if finished is None:
        return CANCELLED if owner else OK
    return BUILD_EXIT_CODES.get(str(finished[1].get("status")), UNAVAILABLE)


async def build(ctx: Context) -> int:
    a = ctx.args
    service = await ctx.service()
    body = {"partitions": a.refs, "force": a.force}
    answer = await service.client.post("/api/v1/cli/build", body)
    return await _started(ctx, service, answer, len(set(a.refs)))


async def _started(ctx: Context, service: Service, answer: Answer, requested: int = 0) -> int:
    """A build the service accepted: its id (``--background``), or its progress to the end."""
    if ctx.args.background:
        return ctx.show(answer, lambda doc: doc["build_request_id"])
    return await _watch(
        ctx, service, answer.doc["build_request_id"], owner=True, requested=requested
    )


async def builds_retry(ctx: Context) -> int:
    """A new build of what a build requested and did not make AVAILABLE (SPEC §9)."""
    service = await ctx.service()
    answer = await service.client.post(f"/api/v1/builds/{segment(ctx.args.id)}/retry")
    doc = answer.doc
    if doc["build_request_id"] is None:
        return ctx.show(answer, lambda doc: doc["message"])
    ctx.say(f"{doc['message']}: build {doc['build_request_id']}")
    return await _started(ctx, service, answer)


async def tail(ctx: Context) -> int:
    service = await ctx.service()
    return await _watch(ctx, service, ctx.args.build_id, owner=False)


# -- the service --------------------------------------------------------------------------------


def _where(ctx: Context) -> str:
    return ctx.environ.get("DATABUILD_SERVICE_URL") or str(ctx.discovery.workspace)


def _health_table(service: Service) -> Callable[[Any], str]:
    return lambda doc: render.service_status(doc, service.client.base_url.rstrip("/"))


async def service_status(ctx: Context) -> int:
    service = await ctx.discovery.locate(start=False)
    if service is None:
        stopped = f"no service is running for {_where(ctx)}"
        ctx.print('{"status": "stopped"}' if ctx.json else stopped)
        return UNAVAILABLE
    return ctx.show(service.health, _health_table(service))


async def service_restart(ctx: Context) -> int:
    """Stop the service once its builds end (``--force``: cancelling them), start a new one."""
    old = await ctx.discovery.locate(start=False)
    if old is None:
        ctx.say(f"no service is running for {_where(ctx)}")
    else:
        body = {"force": True} if ctx.args.force else None
        waiting = False
        while True:
            try:
                await old.client.post("/api/v1/service/shutdown", body)
                break
            except CliError as e:
                if e.exit_code != USAGE:  # not a 409: builds are running
                    raise
            if not waiting:
                waiting = True
                ctx.say("waiting for the running builds to end (`--force` cancels them)")
            await deferLater(ctx.reactor, RESTART_POLL_S)
        await ctx.discovery.wait_gone(old)
    new = await ctx.service()
    pid = f" (pid {new.pid})" if new.pid else ""
    return ctx.show(new.health, lambda doc: f"service{pid} started at {new.client.base_url}")


async def version(ctx: Context) -> int:
    """This databuild's version, and the running service's when one answers."""
    import databuild

    service = None
    with contextlib.suppress(CliError):  # no workspace, or nothing answers: the CLI's alone
        service = await ctx.discovery.locate(start=False)
    doc: dict[str, Any] = {"version": databuild.__version__,
           "service": None if service is None else {
               "url": service.client.base_url.rstrip("/"),
               "version": service.health.doc.get("version"),
           }}  # fmt: skip
    if ctx.json:
        ctx.print(json.dumps(doc))
    else:
        ctx.print(f"databuild {doc['version']}")
        if doc["service"]:
            ctx.print(f"service {doc['service']['version']} at {doc['service']['url']}")
    return OK


async def service_start(ctx: Context) -> int:
    service = await ctx.service()
    if not service.started:
        ctx.say(f"a service is already running for {_where(ctx)}")
    return ctx.show(service.health, _health_table(service))


async def service_stop(ctx: Context) -> int:
    service = await ctx.discovery.locate(start=False)
    if service is None:
        ctx.say(f"no service is running for {_where(ctx)}")
        return OK
    body = {"force": True} if ctx.args.force else None
    try:
        answer = await service.client.post("/api/v1/service/shutdown", body)
    except CliError as e:
        if e.exit_code == USAGE:  # 409: builds are running
            raise CliError(f"the service refused to stop ({e.message}); `databuild service "
                           "stop --force` cancels the running builds and stops it", USAGE) from None
        raise
    await ctx.discovery.wait_gone(service)
    pid = f" (pid {service.pid})" if service.pid else ""
    return ctx.show(answer, lambda doc: f"service{pid} stopped")


async def dashboard(ctx: Context) -> int:
    """Print the dashboard's login link; open it too where a desktop browser exists."""
    service = await ctx.service()
    answer = await service.client.post("/api/v1/dashboard/login-code", None)
    url = answer.doc.get("login_url") or service.client.base_url.rstrip("/") + answer.doc[
        "login_path"
    ]
    if ctx.json:
        ctx.print(json.dumps({**answer.doc, "url": url}))
    else:
        ctx.print(url)
        ctx.say(f"the link logs in once, within {answer.doc['expires_in_s']:g} s")
    if ctx.environ.get("DISPLAY") or ctx.environ.get("WAYLAND_DISPLAY"):
        import webbrowser

        await deferToThread(webbrowser.open, url)
    return OK


COMMANDS: dict[tuple[str, str | None], Command] = {
    ("build", None): build,
    ("tail", None): tail,
    ("analyze", None): analyze,
    ("builds", "list"): builds_list,
    ("builds", "show"): builds_show,
    ("builds", "cancel"): builds_cancel,
    ("builds", "retry"): builds_retry,
    ("partitions", "list"): partitions_list,
    ("partitions", "show"): partitions_show,
    ("jobs", "list"): jobs_list,
    ("jobs", "show"): jobs_show,
    ("tasks", "list"): tasks_list,
    ("tasks", "show"): tasks_show,
    ("tasks", "cancel"): tasks_cancel,
    ("tasks", "logs"): tasks_logs,
    ("workers", "list"): workers_list,
    ("service", "status"): service_status,
    ("service", "start"): service_start,
    ("service", "stop"): service_stop,
    ("service", "restart"): service_restart,
    ("dashboard", None): dashboard,
    ("version", None): version,
}


def command_of(args: argparse.Namespace) -> Command:
    return COMMANDS[(args.command, getattr(args, "action", None))]
