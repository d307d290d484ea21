"""Does the running service fit this CLI (SPEC §6, Bazel's rule)? It fits when it reports the
version this CLI would start and uses the event log this CLI would give it. Other settings
(the idle timeout, the port) are no reason to restart.

The check reads only ``server.json`` (which holds both), the environment and, when
``DATABUILD_BUILD_EVENT_LOG`` is not set, the ``[service]`` table of ``databuild.toml``; an
event-log setting spelled as the running service's was is the same log without resolving it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import frozen

from databuild.startup import (
    ENV_EVENT_LOG,
    GRAPH_FILE,
    describe_event_log,
    event_log_setting,
    reported_version,
)


@frozen
class Difference:
    """One field in which the running service differs from what this CLI would start."""

    name: str
    running: str
    wanted: str

    def __str__(self) -> str:
        return f"{self.name} {self.running} -> {self.wanted}"


def describe(differences: list[Difference]) -> str:
    """``event log A -> B, version 1 -> 2``."""
    return ", ".join(str(d) for d in differences)


def wanted_event_log(workspace: Path, environ: Mapping[str, str]) -> str:
    """The event-log setting a service started now would get (the service's own rule)."""
    if environ.get(ENV_EVENT_LOG):  # the graph file is not read when it cannot matter
        return event_log_setting(None, environ, None)
    return event_log_setting(None, environ, _graph_file_event_log(workspace))


def _graph_file_event_log(workspace: Path) -> str | None:
    """``[service] event_log`` of the graph file; None if unset or the file does not load
    (the service will say what is wrong with it)."""
    try:
        data = tomllib.loads((workspace / GRAPH_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    service = data.get("service")
    value = service.get("event_log") if isinstance(service, dict) else None
    return value if isinstance(value, str) else None


def differences(
    info: Mapping[str, Any], workspace: Path, environ: Mapping[str, str]
) -> list[Difference]:
    """How the service ``server.json`` describes differs from one this CLI would start.

    A field ``server.json`` lacks (a service of an older DataBuild) is compared by version only.
    """
    found = []
    version = reported_version(environ)
    if info.get("version") != version:
        found.append(Difference("version", str(info.get("version")), version))
    running_setting, running_log = info.get("event_log_setting"), info.get("event_log")
    setting = wanted_event_log(workspace, environ)
    if isinstance(running_log, str) and setting != running_setting:
        wanted = describe_event_log(setting, workspace)
        if wanted != running_log:
            found.append(Difference("event log", running_log, wanted))
    return found
