"""Progress readers that never read, against a real service: they are dropped, the service
keeps answering, it holds no subscription of theirs afterwards, and what they cost it is
given back (to the allocator: the next round reuses it)."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from tests.conftest import EXAMPLES
from tests.polling import poll_until
from tests.service.conftest import Service, start_service
from tests.service.test_edge import request
from tests.service.test_logs import MIB, rss_bytes

READERS = 20


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workspace = tmp_path_factory.mktemp("stalled") / "color_votes"
    shutil.copytree(EXAMPLES / "color_votes", workspace)
    running = start_service(workspace, "--idle-timeout", "0")
    yield running
    running.stop()


def big_build(service: Service) -> str:
    """A finished build whose stream is about 6.6 MB: 1000 refs of 1000 characters that no
    job makes (the build fails at once)."""
    refs = [f"nojob/{i:04d}_" + "x" * 990 for i in range(1000)]
    status, _, body = request(service, "POST", "/api/v1/builds",
                              json.dumps({"partitions": refs}).encode())
    assert status == 202
    build_id = json.loads(body)["build_request_id"]

    def failed() -> bool:
        answer = request(service, "GET", f"/api/v1/builds/{build_id}")[2]
        return json.loads(answer)["status"] == "BUILD_REQUEST_FAILED"

    poll_until(failed, "the big build to fail")
    return build_id


def stalled_reader(service: Service, build_id: str, window: int = 4096) -> socket.socket:
    """A connection asking for the stream that reads nothing (and offers a tiny window)."""
    url = urlsplit(service.url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
    sock.connect((url.hostname, url.port))
    sock.sendall(
        f"GET /api/v1/cli/builds/{build_id}/progress HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {service.info['token']}\r\nConnection: close\r\n\r\n".encode()
    )
    return sock


def read_to_the_end(sock: socket.socket) -> bytes:
    sock.settimeout(60)
    received = []
    try:
        while data := sock.recv(1 << 16):
            received.append(data)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return b"".join(received)


def subscriptions(service: Service) -> int:
    """The progress subscriptions the service holds, from its ``/metrics``."""
    status, _, body = request(service, "GET", "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith("databuild_progress_subscriptions "):
            return int(float(line.split()[1]))
    raise AssertionError("no databuild_progress_subscriptions in /metrics")


def drop_a_round(service: Service, build_id: str, whole: bytes) -> None:
    """READERS readers that read nothing, until the service has dropped them all."""
    readers = [stalled_reader(service, build_id) for _ in range(READERS)]
    poll_until(lambda: subscriptions(service) > 0, "the stalled readers to subscribe")
    assert request(service, "GET", "/api/v1/health")[0] == 200  # it answers meanwhile
    drops = service.log_text().count("dropping a stream reader") + READERS
    poll_until(lambda: service.log_text().count("dropping a stream reader") >= drops,
               f"{READERS} stalled readers to be dropped", timeout_s=60)
    poll_until(lambda: subscriptions(service) == 0, "no subscription left")
    for sock in readers:
        cut = read_to_the_end(sock)
        assert b"build_finished" not in cut and len(cut) < len(whole)


def test_readers_that_do_not_read_are_dropped_and_memory_returns(service: Service) -> None:
    build_id = big_build(service)
    whole = read_to_the_end(stalled_reader(service, build_id, 1 << 20))  # one that reads
    assert b"event: build_finished" in whole and len(whole) > 6 * 10**6
    before = rss_bytes(service.process.pid)
    for _ in range(3):
        drop_a_round(service, build_id, whole)
    # Each reader held a copy of its stream once (6.6 MB, 400 MB for the three rounds); now
    # they share frames, hold a page at a time, and what they held is given back.
    grown = rss_bytes(service.process.pid) - before
    assert grown < 5 * len(whole), f"three rounds left {grown / MIB:.0f} MiB behind"
