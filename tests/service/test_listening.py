"""Port choice and server.json, on real sockets and files."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol

import databuild
from databuild.service.listening import listen_first_free
from databuild.service.serverinfo import (
    ServerInfo,
    remove_server_info,
    server_url,
    write_server_info,
)


@pytest.fixture
def taken_ports() -> Iterator[list[int]]:
    """Two consecutive ports held by this test (found by probing upwards from a free one)."""
    sockets: list[socket.socket] = []
    try:
        while True:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            second = socket.socket()
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                first.close()
                second.close()
                continue
            sockets = [first, second]
            for s in sockets:
                s.listen()
            yield [port, port + 1]
            return
    finally:
        for s in sockets:
            s.close()


def factory() -> Factory:
    return Factory.forProtocol(Protocol)


@pytest_twisted.ensureDeferred
async def test_taken_preferred_port_falls_back_to_a_later_one(taken_ports: list[int]) -> None:
    port = await listen_first_free(reactor, "127.0.0.1", taken_ports[0], 20, factory())
    try:
        chosen = port.getHost().port
        assert taken_ports[1] < chosen <= taken_ports[0] + 20
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_all_ports_of_the_range_taken_names_them(taken_ports: list[int]) -> None:
    with pytest.raises(CannotListenError, match=f"{taken_ports[0]}..{taken_ports[1]}"):
        await listen_first_free(reactor, "127.0.0.1", taken_ports[0], 1, factory())


@pytest_twisted.ensureDeferred
async def test_port_zero_means_any_free_port() -> None:
    port = await listen_first_free(reactor, "127.0.0.1", 0, 20, factory())
    try:
        assert port.getHost().port > 0
    finally:
        await port.stopListening()


def info(pid: int = 1234, token: str = "t") -> ServerInfo:
    return ServerInfo(
        pid, 8080, "http://127.0.0.1:8080", token, 1, databuild.__version__, "/ws", "/ws/bel", "bel"
    )


def test_server_file_is_owner_only_and_complete(tmp_path: Path) -> None:
    path = tmp_path / ".databuild" / "server.json"
    write_server_info(path, info())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "pid": 1234, "port": 8080, "url": "http://127.0.0.1:8080", "token": "t",
        "started_at": 1, "version": databuild.__version__, "workspace": "/ws",
        "event_log": "/ws/bel", "event_log_setting": "bel",
    }
    assert [p.name for p in path.parent.iterdir()] == ["server.json"]


def test_server_file_of_another_service_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    write_server_info(path, info(pid=1, token="newer"))
    assert not remove_server_info(path, info(pid=1, token="older"))
    assert path.exists()
    assert remove_server_info(path, info(pid=1, token="newer"))
    assert not path.exists()


@pytest.mark.parametrize(
    ("interface", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:80"),
        ("0.0.0.0", "http://127.0.0.1:80"),
        ("::1", "http://[::1]:80"),
        ("::", "http://[::1]:80"),
    ],
)
def test_url_is_reachable_from_this_host(interface: str, url: str) -> None:
    assert server_url(interface, 80) == url
