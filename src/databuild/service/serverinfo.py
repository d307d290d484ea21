"""``<workspace>/.databuild/server.json``: how clients find and authenticate to the service."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from attrs import asdict, frozen

SERVER_FILE = "server.json"


@frozen
class ServerInfo:
    """What a running service tells its clients (SPEC §5.1)."""

    pid: int
    port: int
    url: str
    token: str
    started_at: int
    version: str
    workspace: str
    event_log: str
    """The event log it uses, resolved and without any password (as in its health)."""
    event_log_setting: str
    """The event-log setting it was started with, as given; a client whose own setting is the
    same string knows, without resolving it, that the log is the same (SPEC §6)."""

    def to_json(self) -> dict[str, Any]:
        """The ``server.json`` document (SPEC §5.1)."""
        return asdict(self)


def server_url(interface: str, port: int) -> str:
    """The URL a local client uses to reach a service listening on ``interface``."""
    if interface in ("0.0.0.0", "::"):
        interface = "127.0.0.1" if interface == "0.0.0.0" else "::1"
    host = f"[{interface}]" if ":" in interface else interface
    return f"http://{host}:{port}"


def write_server_info(path: Path, info: ServerInfo) -> None:
    """Write ``path`` atomically (a temporary file renamed over it), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{info.pid}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(info.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_server_info(path: Path, info: ServerInfo) -> bool:
    """Remove ``path`` if it still describes this service (not a newer one); True if removed."""
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(current, dict) or current != info.to_json():
        return False
    path.unlink(missing_ok=True)
    return True
