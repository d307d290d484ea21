"""DNS rebinding (SPEC §8): a real ``twistd databuild`` serves a request only if its ``Host``
names it — its address, ``localhost``, this host's names, the dashboard's own name, or a name
given with ``--allowed-host`` — and refuses anything else with a JSON 400, health included."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.conftest import EXAMPLES
from tests.service.browser import api
from tests.service.conftest import Service, installed, start_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workspace = tmp_path_factory.mktemp("hosts") / "color_votes"
    shutil.copytree(EXAMPLES / "color_votes", workspace)
    running = start_service(
        workspace, "--idle-timeout", "0", "--allowed-host", "Builds.Example.COM",
        "--allowed-host", "10.1.2.3",
    )  # fmt: skip
    yield running
    running.stop()


def get(service: Service, path: str, host: str, token: bool = True) -> tuple[int, Any, bytes]:
    """``GET path`` over a fresh connection to the service, with ``Host: host``."""
    url = urlsplit(service.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        headers = {"Host": host, **(service.headers() if token else {})}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("content-type"), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/api/v1/health", "/api/v1/builds", "/metrics", "/", "/login",
                                  "/static/style.css"])
@pytest.mark.parametrize("host", ["rebind.example", "rebind.example:{port}", "evil.localhost",
                                  "127.0.0.1.nip.io:{port}", "[::2]:{port}"])
def test_a_foreign_host_is_refused_with_a_json_400(service: Service, path: str, host: str) -> None:
    status, kind, body = get(service, path, host.format(port=service.info["port"]))
    assert status == 400, body
    assert kind == "application/json; charset=utf-8"
    error = json.loads(body)["error"]
    assert error["code"] == "bad_host"
    assert "--allowed-host" in error["message"]
    assert str(service.workspace) not in body.decode()  # health said where it runs: not now


def test_no_host_header_is_refused_too(service: Service) -> None:
    url = urlsplit(service.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", head
    assert json.loads(body)["error"]["code"] == "bad_host"


def test_the_services_own_names_are_served(service: Service) -> None:
    port = service.info["port"]
    dashboard = urlsplit(api(service, "POST", "/api/v1/dashboard/login-code")[1]["login_url"])
    hosts = [f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", "builds.example.com:443",
             "builds.example.com.", f"10.1.2.3:{port}", socket.gethostname(), dashboard.netloc]
    for host in hosts:
        status, _, body = get(service, "/api/v1/health", host, token=False)
        assert status == 200, (host, body)
        assert get(service, "/api/v1/builds", host)[0] == 200, host


def test_allowed_host_must_be_a_name_or_an_address(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "color_votes", tmp_path / "ws")
    for bad in ("rebind.example:80", "a b", "-x.example", "http://x"):
        done = subprocess.run(
            [installed("twistd"), "-n", "databuild", "--workspace", str(tmp_path / "ws"),
             "--allowed-host", bad], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0
        assert f"--allowed-host must be a host name or an IP address (no port), not {bad!r}" in (
            done.stdout + done.stderr
        )
