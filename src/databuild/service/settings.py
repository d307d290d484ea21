"""The service's settings, each from the first of: flag, environment, ``databuild.toml``, default.

SPEC §5.1 and §6 ("Precedence"). Parsers raise ``ValueError`` with a sentence naming the
setting, so the same checks serve flags, environment variables and the graph file.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen

import databuild
from databuild.bel.backend import EventLogError, parse_uri
from databuild.graph import Workspace
from databuild.graph.workspace import EXECUTOR_KINDS
from databuild.startup import ENV_EVENT_LOG, event_log_setting, reported_version

DEFAULT_PORT = 8080
DEFAULT_PORT_RANGE = 20
DEFAULT_INTERFACE = "127.0.0.1"
DEFAULT_IDLE_TIMEOUT_S = 300.0
DEFAULT_KEEPALIVE_S = 15.0
DEFAULT_HEARTBEAT_S = 5.0
DEFAULT_LEASE_TIMEOUT_S = 30.0
ENV_IDLE_TIMEOUT = "DATABUILD_SERVICE_TIMEOUT"
ENV_BROKER = "DATABUILD_BROKER_URL"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_QUEUE = "databuild"


def parse_port(value: object, what: str = "--port") -> int:
    """A TCP port number, 0 meaning any free port."""
    port = _int(value, what)
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} must be between 0 and 65535, not {port}")
    return port


def parse_count(value: object, what: str, minimum: int) -> int:
    """A whole number of at least ``minimum``."""
    n = _int(value, what)
    if n < minimum:
        raise ValueError(f"{what} must be at least {minimum}, not {n}")
    return n


def parse_seconds(value: object, what: str) -> float:
    """A non-negative number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of seconds, not {value!r}")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, not {value!r}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{what} must be a finite number of seconds, at least 0, not {value!r}")
    return seconds


def parse_interface(value: str) -> str:
    """An IPv4 or IPv6 address to listen on."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"--interface must be an IP address, not {value!r}") from None


def is_loopback(interface: str) -> bool:
    """Whether the IP address ``interface`` is a loopback one."""
    return ipaddress.ip_address(interface).is_loopback


MIN_TOKEN_CHARS = 16


def read_token_file(path: Path) -> str:
    """The bearer token held in ``path`` (surrounding whitespace ignored), of at least
    MIN_TOKEN_CHARS characters."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read --token-file {str(path)!r}: {e}") from None
    if not token:
        raise ValueError(f"--token-file {str(path)!r} is empty")
    if any(not c.isprintable() or c.isspace() for c in token):
        raise ValueError(f"--token-file {str(path)!r} must hold one token without spaces")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"--token-file {str(path)!r} holds a token of {len(token)} characters; it must have "
            f"at least {MIN_TOKEN_CHARS} (e.g. python3 -c 'import secrets; "
            f"print(secrets.token_urlsafe(32))')"
        )
    return token


def _int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{what} must be a whole number, not {value!r}") from None


@frozen
class ServiceConfig:
    """Everything the running service needs, resolved once at start."""

    workspace: Workspace
    event_log: str
    port: int
    port_range: int
    interface: str
    idle_timeout_s: float
    max_parallel_jobs: int
    token: str
    keepalive_s: float = DEFAULT_KEEPALIVE_S
    version: str = databuild.__version__
    """The version the service reports (``databuild.startup.reported_version``)."""
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S
    allowed_hosts: tuple[str, ...] = ()
    """Names a request's ``Host`` may give beyond the service's own (``service.hosts``)."""
    executor: str = "local"
    """Where job runs go (SPEC §10): ``local`` child processes or ``celery`` workers."""
    broker: str = DEFAULT_BROKER
    queue: str = DEFAULT_QUEUE

    @property
    def root(self) -> Path:
        """The served workspace's directory."""
        return self.workspace.root


@frozen
class Flags:
    """The service options as given on the command line; ``None`` when not given."""

    port: int | None = None
    port_range: int = DEFAULT_PORT_RANGE
    interface: str = DEFAULT_INTERFACE
    event_log: str | None = None
    idle_timeout_s: float | None = None
    max_parallel_jobs: int | None = None
    token_file: Path | None = None
    keepalive_s: float = DEFAULT_KEEPALIVE_S
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S
    allowed_hosts: tuple[str, ...] = ()
    executor: str | None = None
    broker: str | None = None


def parse_executor(value: str) -> str:
    """An executor kind of SPEC §10."""
    if value not in EXECUTOR_KINDS:
        raise ValueError(
            f"--executor must be one of {', '.join(EXECUTOR_KINDS)}, not {value!r}"
        )
    return value


def check_lease(heartbeat_s: float, lease_timeout_s: float) -> None:
    """A heartbeat above 0 and a lease of at least two heartbeats (SPEC §5.8)."""
    if heartbeat_s <= 0:
        raise ValueError("--heartbeat must be more than 0 seconds")
    if lease_timeout_s < 2 * heartbeat_s:
        raise ValueError(
            f"--lease-timeout ({lease_timeout_s:g} s) must be at least twice --heartbeat "
            f"({heartbeat_s:g} s): a service stops one heartbeat before its lease expires"
        )


def resolve(flags: Flags, environ: Mapping[str, str], workspace: Workspace) -> ServiceConfig:
    """Combine flags, environment and ``[service]`` of the graph file; ValueError if invalid."""
    if flags.token_file is None and not is_loopback(flags.interface):
        raise ValueError(
            f"refusing to listen on the non-loopback address {flags.interface} without "
            "--token-file: anyone who can reach it could run builds"
        )
    file = workspace.service
    idle = _first(
        (flags.idle_timeout_s, "--idle-timeout"),
        (environ.get(ENV_IDLE_TIMEOUT) or None, ENV_IDLE_TIMEOUT),
        (file.idle_timeout, "[service] idle_timeout"),
    )
    port = _first((flags.port, "--port"), (file.port, "[service] port"))
    jobs = _first(
        (flags.max_parallel_jobs, "--max-parallel-jobs"),
        (file.max_parallel_jobs, "[service] max_parallel_jobs"),
    )
    log_uri = event_log_setting(flags.event_log, environ, file.event_log)
    kind = flags.executor or workspace.executor.kind or "local"
    broker = flags.broker or environ.get(ENV_BROKER) or workspace.executor.broker
    if kind == "celery" and _dialect(log_uri, workspace) != "postgresql":
        raise ValueError(
            f"the celery executor needs a PostgreSQL event log, which its workers report to; "
            f"{log_uri!r} is SQLite: set --event-log (${ENV_EVENT_LOG}, [service] event_log) "
            f"to postgresql://..., or use --executor local"
        )
    return ServiceConfig(
        workspace=workspace,
        event_log=log_uri,
        port=DEFAULT_PORT if port is None else parse_port(*port),
        port_range=flags.port_range,
        interface=flags.interface,
        idle_timeout_s=DEFAULT_IDLE_TIMEOUT_S if idle is None else parse_seconds(*idle),
        max_parallel_jobs=(os.cpu_count() or 1) if jobs is None else parse_count(*jobs, 1),
        token=(
            read_token_file(flags.token_file)
            if flags.token_file is not None
            else secrets.token_urlsafe(32)
        ),
        keepalive_s=flags.keepalive_s,
        version=reported_version(environ),
        heartbeat_s=flags.heartbeat_s,
        lease_timeout_s=flags.lease_timeout_s,
        allowed_hosts=flags.allowed_hosts,
        executor=kind,
        broker=broker or DEFAULT_BROKER,
        queue=workspace.executor.queue or DEFAULT_QUEUE,
    )


def _dialect(uri: str, workspace: Workspace) -> str:
    """The event log's dialect; an URI that does not parse is left for the log to report."""
    try:
        return parse_uri(uri, workspace.root).dialect
    except EventLogError:
        return "postgresql"


def _first(*candidates: tuple[object, str]) -> tuple[object, str] | None:
    """The first candidate ``(value, where it came from)`` whose value is set."""
    return next((c for c in candidates if c[0] is not None), None)
