"""``twistd databuild``: the options and the service tree of the DataBuild service (SPEC §5.1)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from databuild import startup
from databuild.errors import GraphFileError
from databuild.graph import load_workspace
from databuild.service import settings
from databuild.service.hosts import parse_host_name
from databuild.service.settings import Flags, ServiceConfig
from databuild.service.startreport import StartReport


class SettingError(SystemExit):
    """A setting the service cannot start with that is not a flag's: ``databuild.toml`` (its
    file and line), the environment, the token file. twistd prints only this sentence and
    exits 1; a flag's error (``UsageError``) comes with twistd's usage text."""

    def __init__(self, sentence: str) -> None:
        super().__init__(f"twistd databuild: {sentence}")


class Options(usage.Options):
    """Options of ``twistd databuild``; each is checked as it is parsed."""

    synopsis = "[--workspace DIR] [--port N] [options]"
    longdesc = (
        "Serve one DataBuild workspace: the HTTP API, the job executor and the Build Event "
        "Log. Each setting comes from its flag, else the environment, else the [service] "
        "table of databuild.toml, else its default."
    )
    optParameters = [
        ["workspace", None, None, "The workspace to serve (default: the current directory)."],
        ["port", None, None, "Preferred port; 0 = any free port ([service] port, else 8080)."],
        ["port-range", None, settings.DEFAULT_PORT_RANGE,
         "If the preferred port is taken, try the next N ports."],
        ["interface", None, settings.DEFAULT_INTERFACE, "The address to listen on."],
        ["event-log", None, None,
         "Where the Build Event Log lives: a path, sqlite:///PATH or postgresql://... "
         f"(${startup.ENV_EVENT_LOG}, [service] event_log, else {startup.DEFAULT_EVENT_LOG})."],
        ["idle-timeout", None, None,
         f"Stop after this many idle seconds; 0 = never (${settings.ENV_IDLE_TIMEOUT}, "
         "[service] idle_timeout, else 300)."],
        ["max-parallel-jobs", None, None,
         "Job processes at once, over all builds ([service] max_parallel_jobs, else CPUs)."],
        ["token-file", None, None,
         "File holding the bearer token clients must send (default: a fresh random token)."],
        ["keepalive", None, settings.DEFAULT_KEEPALIVE_S,
         "Seconds between keepalive comments on an idle progress stream."],
        ["heartbeat", None, settings.DEFAULT_HEARTBEAT_S,
         "Seconds between renewals of this service's lease on a shared event log."],
        ["lease-timeout", None, settings.DEFAULT_LEASE_TIMEOUT_S,
         "Seconds after which a lease not renewed has expired (database clock)."],
        ["executor", None, None,
         "Where job runs go: local (child processes) or celery (workers; PostgreSQL log "
         "only) ([executor] kind, else local)."],
        ["broker", None, None,
         f"The Celery broker URL (${settings.ENV_BROKER}, [executor] broker, else "
         f"{settings.DEFAULT_BROKER})."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["allowed-host"] = []

    def opt_allowed_host(self, value: str) -> None:
        """A name clients reach the service by, beyond its address, localhost and this host's
        names; requests with any other Host are refused (DNS rebinding). Repeatable."""
        self["allowed-host"].append(_checked(parse_host_name, value))

    def opt_port(self, value: str) -> None:
        self["port"] = _checked(settings.parse_port, value)

    def opt_port_range(self, value: str) -> None:
        self["port-range"] = _checked(settings.parse_count, value, "--port-range", 0)

    def opt_interface(self, value: str) -> None:
        self["interface"] = _checked(settings.parse_interface, value)

    def opt_idle_timeout(self, value: str) -> None:
        self["idle-timeout"] = _checked(settings.parse_seconds, value, "--idle-timeout")

    def opt_max_parallel_jobs(self, value: str) -> None:
        self["max-parallel-jobs"] = _checked(
            settings.parse_count, value, "--max-parallel-jobs", 1
        )

    def opt_keepalive(self, value: str) -> None:
        seconds = _checked(settings.parse_seconds, value, "--keepalive")
        if seconds == 0:
            raise usage.UsageError("--keepalive must be more than 0 seconds")
        self["keepalive"] = seconds

    def opt_heartbeat(self, value: str) -> None:
        self["heartbeat"] = _checked(settings.parse_seconds, value, "--heartbeat")

    def opt_lease_timeout(self, value: str) -> None:
        self["lease-timeout"] = _checked(settings.parse_seconds, value, "--lease-timeout")

    def opt_executor(self, value: str) -> None:
        self["executor"] = _checked(settings.parse_executor, value)

    def opt_workspace(self, value: str) -> None:
        if not Path(value).is_dir():
            raise usage.UsageError(f"--workspace {value!r} is not a directory")
        self["workspace"] = value

    def postOptions(self) -> None:
        root = Path(self["workspace"] or os.getcwd())
        _checked(settings.check_lease, float(self["heartbeat"]), float(self["lease-timeout"]))
        try:
            workspace = load_workspace(root)
        except GraphFileError as e:
            raise SettingError(str(e)) from None
        flags = Flags(
            port=self["port"],
            port_range=self["port-range"],
            interface=self["interface"],
            event_log=self["event-log"],
            idle_timeout_s=self["idle-timeout"],
            max_parallel_jobs=self["max-parallel-jobs"],
            token_file=Path(self["token-file"]) if self["token-file"] else None,
            keepalive_s=self["keepalive"],
            heartbeat_s=float(self["heartbeat"]),
            lease_timeout_s=float(self["lease-timeout"]),
            allowed_hosts=tuple(self["allowed-host"]),
            executor=self["executor"],
            broker=self["broker"],
        )
        try:
            self.config = settings.resolve(flags, os.environ, workspace)
        except ValueError as e:
            raise SettingError(str(e)) from None


def _checked(parse: Callable[..., Any], *args: Any) -> Any:
    try:
        return parse(*args)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


def makeService(options: Options, reactor: Any = None) -> IService:
    """The whole service for the options ``twistd`` parsed."""
    if reactor is None:
        from twisted.internet import reactor
    from databuild.service.assembly import build_service

    config: ServiceConfig = options.config
    return build_service(config, reactor, StartReport(getattr(options, "parent", None)))
