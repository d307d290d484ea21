"""Locating the workspace's live service over HTTP, and starting one when none answers.

The files, the staleness rules and the launch itself are in ``servicefiles``; this module is
the asynchronous part: health checks, waiting for the start lock, waiting for a new service to
answer (SPEC §6).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

from attrs import frozen
from twisted.internet.task import deferLater

from databuild.cli.client import Answer, ApiClient
from databuild.cli.exits import UNAVAILABLE, USAGE, CliError
from databuild.cli.fit import Difference, describe, differences
from databuild.cli.servicefiles import (
    LOCK_DEADLINE_S,
    LOGFILE,
    PIDFILE,
    POLL_S,
    SERVER_JSON,
    START_DEADLINE_S,
    Launch,
    Say,
    launch,
    log_tail,
    pidfile_owner,
    read_json_file,
    same_dir,
    server_json_owner,
    start_failure,
    state_dir,
    try_lock,
)
from databuild.proc.info import alive, started_at
from databuild.startup import reported_version

STOP_DEADLINE_S = 60.0


@frozen
class Service:
    """A service that answered: its client, its pid when it is a local one, and its answer
    to the health check."""

    client: ApiClient
    pid: int | None
    health: Answer
    started: bool = False
    info: Mapping[str, Any] | None = None
    """What its ``server.json`` says (a local service only)."""


class Discovery:
    """Locates (and if asked, starts) the service of one workspace."""

    def __init__(
        self,
        reactor: Any,
        workspace: Path | None,
        environ: Mapping[str, str],
        say: Say,
        prestarted: tuple[int, Launch] | None = None,
    ) -> None:
        self.reactor = reactor
        self.workspace = workspace
        self.environ = environ
        self.say = say
        self._prestarted = prestarted
        """The start lock and twistd launch that ``main`` began before loading Twisted."""
        self._warned = False

    @property
    def state(self) -> Path:
        """The workspace's ``.databuild`` directory (there is one unless a URL was given)."""
        assert self.workspace is not None
        return state_dir(self.workspace)

    async def locate(self, *, start: bool) -> Service | None:
        """The live service; with ``start``, one is started if none answers."""
        url = self.environ.get("DATABUILD_SERVICE_URL")
        if url:
            token = self.environ.get("DATABUILD_SERVICE_TOKEN")
            client = ApiClient(self.reactor, url, token, token_from="DATABUILD_SERVICE_TOKEN")
            health = await client.health()
            self._warn_of_version(health.doc)
            return Service(client, None, health)
        if self._prestarted is not None:
            lock, started = self._prestarted
            self._prestarted = None
            return await self._locked(lock, self._wait_for_start(started))
        service = await self.running()
        if service is not None and not (start and await self._stopped_unfit(service)):
            return service
        if not start:
            return None
        lock = await self._lock()
        return await self._locked(lock, self._running_or_start())

    def _warn_of_version(self, health: object) -> None:
        """Once: the service at DATABUILD_SERVICE_URL is another version (never restarted)."""
        version = health.get("version") if isinstance(health, Mapping) else None
        wanted = reported_version(self.environ)
        if version != wanted and not self._warned:
            self._warned = True
            self.say(f"the service at {self.environ['DATABUILD_SERVICE_URL']} runs version "
                     f"{version}, this databuild is {wanted}")

    def unfit(self, info: Mapping[str, Any]) -> list[Difference]:
        """How the local service ``info`` describes differs from one this CLI would start."""
        assert self.workspace is not None
        return differences(info, self.workspace, self.environ)

    async def _stopped_unfit(self, service: Service) -> bool:
        """If ``service`` does not fit, stop it and return True once it is gone; if it is
        running builds, leave it alone and exit 2 saying how to go on (SPEC §6)."""
        assert service.info is not None
        found = self.unfit(service.info)
        if not found:
            return False
        active = service.health.doc.get("active_builds")
        if not active:
            try:
                await service.client.post("/api/v1/service/shutdown")
            except CliError as e:
                if e.exit_code == USAGE:  # 409: builds started meanwhile
                    active = "new"
                elif e.exit_code != UNAVAILABLE:  # unreachable: another CLI stopped it
                    raise
        if active:
            raise CliError(
                f"the service no longer fits: {describe(found)}; it is running {active} "
                "build(s), so it was left alone: `databuild service restart` restarts it once "
                "they end (`--force` cancels them)",
                USAGE,
            )
        self.say(f"restarting the service: {describe(found)}")
        await self.wait_gone(service)
        return True

    async def wait_gone(self, service: Service) -> None:
        """Wait until the service's process is gone (a remote one: until it stops answering)."""
        deadline = self.reactor.seconds() + STOP_DEADLINE_S
        while self.reactor.seconds() < deadline:
            if service.pid is not None:
                if not alive(service.pid):
                    return
            else:
                try:
                    await service.client.health()
                except CliError:
                    return
            await deferLater(self.reactor, POLL_S)
        raise CliError(f"the service is still running {STOP_DEADLINE_S:.0f}s after it was "
                       "asked to stop", UNAVAILABLE)

    async def _locked(self, lock: int, work: Awaitable[Service]) -> Service:
        try:
            return await work
        finally:
            os.close(lock)

    async def _running_or_start(self) -> Service:
        return await self.running() or await self._start()

    async def running(self) -> Service | None:
        """The service ``server.json`` names, if it is vouched for (see ``_vouched``)."""
        info = read_json_file(self.state / SERVER_JSON)
        if info is None or not isinstance(info.get("url"), str):
            return None
        return await self._vouched(info)

    async def _vouched(self, info: Mapping[str, Any]) -> Service | None:
        """The service ``info`` (``server.json``) names, with a client holding its token, if it
        has been vouched for: the process is alive and is the service that wrote ``info`` (pid
        and start time), and it answers a health check (sent without the token) naming its
        pid and this workspace. Else None, and the token went nowhere."""
        if server_json_owner(info, self.state.parent) is None:
            return None
        try:
            health = await ApiClient(self.reactor, info["url"], None).health()
        except CliError:
            return None
        doc = health.doc
        if (
            not isinstance(doc, Mapping)
            or doc.get("pid") != info.get("pid")
            or not same_dir(doc.get("workspace"), self.state.parent)
        ):
            return None
        client = ApiClient(self.reactor, info["url"], info.get("token"))
        return Service(client, info["pid"], health, info=info)

    async def read(self, path: str, params: Mapping[str, object] | None = None) -> Answer:
        """``GET path`` from the service, started if need be."""
        service = await self.locate(start=True)
        assert service is not None
        return await service.client.get(path, params)

    async def _lock(self) -> int:
        deadline = self.reactor.seconds() + LOCK_DEADLINE_S
        while (fd := try_lock(self.state)) is None:
            if self.reactor.seconds() > deadline:
                raise CliError(
                    f"another databuild has been starting the service of "
                    f"{self.workspace} for {LOCK_DEADLINE_S:.0f}s; giving up",
                    UNAVAILABLE,
                )
            await deferLater(self.reactor, POLL_S)
        return fd

    async def _start(self) -> Service:
        silent = await self._outlive_silent_service()
        if silent is not None:
            return silent
        return await self._wait_for_start(launch(self.state.parent, self.environ, self.say))

    async def _wait_for_start(self, started: Launch) -> Service:
        """Poll until the new service answers; twistd exits once the daemon has started."""
        try:
            deadline = self.reactor.seconds() + START_DEADLINE_S
            while self.reactor.seconds() < deadline:
                code = started.process.poll()
                if code:
                    raise self._failed(f"twistd exited with code {code}", started)
                if (self.state / SERVER_JSON).exists():
                    service = await self.running()
                    if service is not None:
                        return Service(service.client, service.pid, service.health, True,
                                       service.info)
                if code == 0 and pidfile_owner(self.state / PIDFILE) is None:
                    raise self._failed("the service stopped right after starting", started)
                await deferLater(self.reactor, POLL_S)
            raise self._failed(f"it did not answer within {START_DEADLINE_S:.0f}s", started)
        finally:
            started.close()

    async def _outlive_silent_service(self) -> Service | None:
        """A service process that does not answer (yet) is either starting or stopping: wait
        until it answers or is gone; twistd would refuse to start beside it anyway."""
        pid = pidfile_owner(self.state / PIDFILE)
        deadline = self.reactor.seconds() + START_DEADLINE_S
        while pid is not None and started_at(pid) is not None:
            service = await self.running()
            if service is not None:
                return service
            if self.reactor.seconds() > deadline:
                raise CliError(
                    f"the service (pid {pid}) of {self.workspace} runs but does not answer; "
                    f"see {self.state / LOGFILE}",
                    UNAVAILABLE,
                )
            await deferLater(self.reactor, POLL_S)
        return None

    def _failed(self, why: str, started: Launch) -> CliError:
        """The error of a failed start: first the one sentence naming the problem, then what
        else twistd said and the end of the service log."""
        tail = log_tail(self.state / LOGFILE, started.log_offset)
        sentence, more = start_failure(started.said(), tail)
        parts = [f"the DataBuild service could not start: {sentence or why}"]
        if more:
            parts.append(more)
        if tail:
            parts.append(f"--- end of {self.state / LOGFILE} ---\n{tail}")
        return CliError("\n".join(parts), UNAVAILABLE)
