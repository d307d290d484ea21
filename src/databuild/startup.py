"""What a service is started with, in rules the service and its clients share (SPEC §6,
"Restarting a service that no longer fits"): the graph file's name, the version a service
reports, which event-log setting wins, and where a setting puts the log; and which of its
environment's entries are DataBuild's secrets, never passed on to a service or a job. Standard
library only: the CLI reads it on every call, and must not load the event log to compare two
addresses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import databuild

GRAPH_FILE = "databuild.toml"
ENV_EVENT_LOG = "DATABUILD_BUILD_EVENT_LOG"
DEFAULT_EVENT_LOG = ".databuild/bel.sqlite"
ENV_SERVICE_TOKEN = "DATABUILD_SERVICE_TOKEN"
"""A client's token for the service at ``DATABUILD_SERVICE_URL``: a team service's key."""
ENV_VERSION = "DATABUILD_TEST_SERVICE_VERSION"
"""A test hook (docs/service.md): the version a service reports instead of the package's, so
that a test can run a service that differs from its CLI honestly."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class EventLogSettingError(ValueError):
    """An event-log setting that names no log (empty, an unknown scheme, a bad SQLite URI)."""


def reported_version(environ: Mapping[str, str]) -> str:
    """The version a service started with ``environ`` reports."""
    return environ.get(ENV_VERSION) or databuild.__version__


def event_log_setting(
    flag: str | None, environ: Mapping[str, str], graph_file: str | None
) -> str:
    """The event-log setting a service gets: ``--event-log``, else the environment, else
    ``[service] event_log`` of the graph file, else the default (SPEC §4.3)."""
    for value in (flag, environ.get(ENV_EVENT_LOG), graph_file):
        if value:
            return value
    return DEFAULT_EVENT_LOG


def event_log_location(setting: str, workspace_root: Path) -> tuple[str, str]:
    """``(dialect, target)`` of the log ``setting`` names: ``"sqlite"`` and the file's
    absolute path (a relative plain path is taken from ``workspace_root``), or
    ``"postgresql"`` and the connection URI. Raises EventLogSettingError."""
    if not isinstance(setting, str) or not setting.strip():
        raise EventLogSettingError("the event log URI is empty")
    match = _SCHEME.match(setting)
    if match is None:
        path = Path(setting).expanduser()
        return "sqlite", str(path if path.is_absolute() else workspace_root / path)
    scheme = match.group(1).lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql", setting
    if scheme == "sqlite":
        absolute = unquote(urlsplit(setting).path)
        if urlsplit(setting).netloc or not absolute.startswith("/") or absolute == "/":
            raise EventLogSettingError(
                f"event log URI {setting!r}: write SQLite URIs as sqlite:///ABSOLUTE/PATH"
            )
        return "sqlite", absolute
    raise EventLogSettingError(
        f"event log URI {setting!r}: unknown scheme {scheme!r}; "
        "use a path, sqlite:///ABSOLUTE/PATH or postgresql://user@host/dbname"
    )


def describe_location(dialect: str, target: str) -> str:
    """An event log's location without any password, for messages, logs and ``server.json``."""
    if dialect == "sqlite":
        return target
    parts = urlsplit(target)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{parts.username or ''}@{host}{port}{parts.path}"


def describe_event_log(setting: str, workspace_root: Path) -> str:
    """The log ``setting`` names, described as a service describes its own; the setting
    itself if it names none (the service will say why when it is started with it)."""
    try:
        return describe_location(*event_log_location(setting, workspace_root))
    except EventLogSettingError:
        return setting


CLIENT_SECRETS = (ENV_SERVICE_TOKEN,)
"""What only a client uses: a service started by a CLI is not given it."""
JOB_SECRETS = (*CLIENT_SECRETS, ENV_EVENT_LOG)
"""What no job gets: the client's token, and the event log's URI (it may hold a password; only
the service writes the log)."""


def without(environ: Mapping[str, str], secrets: tuple[str, ...]) -> dict[str, str]:
    """A copy of ``environ`` without the entries named in ``secrets``."""
    return {name: value for name, value in environ.items() if name not in secrets}
