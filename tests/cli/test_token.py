"""The token goes only to a service the CLI vouched for, never to a squatter on its port."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.polling import poll_until

from databuild.proc.info import alive

from .conftest import Run, server_info


class Squatter(ThreadingHTTPServer):
    """Answers every request like the dead service would, and keeps the headers it got."""

    daemon_threads = True

    def __init__(self, port: int, health: dict) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        self.health = json.dumps(health).encode()
        super().__init__(("127.0.0.1", port), SquatterHandler)


class SquatterHandler(BaseHTTPRequestHandler):
    server: Squatter

    def _answer(self) -> None:
        self.server.seen.append(
            (self.command, self.path, self.headers.get("Authorization"))
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.health)))
        self.end_headers()
        self.wfile.write(self.server.health)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def squatter(workspace: Path, databuild: Run) -> Iterator[Squatter]:
    """The service started, killed with SIGKILL, and its port taken by a Squatter that
    answers health naming the dead service's pid and workspace."""
    assert databuild("service", "start").returncode == 0
    info = server_info(workspace)
    os.kill(info["pid"], signal.SIGKILL)
    poll_until(lambda: not alive(info["pid"]), "the service to die")
    health = {"status": "ok", "pid": info["pid"], "workspace": str(workspace),
              "version": "0", "active_builds": 0, "idle_timeout": 30}

    def squat() -> Squatter | None:
        try:
            return Squatter(urlsplit(info["url"]).port, health)
        except OSError:  # a client connection of this busy machine has the port for a moment
            return None

    server = poll_until(squat, "the dead service's port to be free")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_after_kill_9_a_squatter_on_the_port_never_gets_the_token(
    workspace: Path, databuild: Run, squatter: Squatter
) -> None:
    token = server_info(workspace)["token"]
    assert databuild("service", "status").returncode != 0
    databuild("service", "stop")
    listed = databuild("builds", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert server_info(workspace)["token"] != token  # a new service answered
    assert all(auth is None for _, _, auth in squatter.seen), squatter.seen
