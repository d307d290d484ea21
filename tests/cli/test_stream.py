"""The HTTP client and the progress follower against a real loopback HTTP server."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from databuild.cli import stream
from databuild.cli.client import ApiClient
from databuild.cli.exits import NOT_FOUND, UNAVAILABLE, USAGE, CliError
from databuild.cli.progress import BuildProgress, JsonDisplay, PlainDisplay
from databuild.cli.stream import Follower


def frame(idx: int, kind: str, data: dict[str, Any]) -> bytes:
    return f"id: {idx}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


EVENTS = [{"idx": i, "event_type": "job", "status": "JOB_RUNNING"} for i in (1, 2, 3)]
FINISHED = {"build_request_id": "b1", "status": "BUILD_REQUEST_COMPLETED", "message": ""}


class Progress(Resource):
    """Sends events 1 and 2, then drops the connection; a resumed stream gets the rest."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.resumed_from: list[str | None] = []
        self.omitted: list[list[bytes] | None] = []

    def render_GET(self, request: Any) -> Any:
        header = request.getHeader(b"last-event-id")
        since = int(header) if header else 0
        self.resumed_from.append(header)
        self.omitted.append(request.args.get(b"omit"))
        request.setHeader(b"content-type", b"text/event-stream")
        request.write(b": keepalive\n\n")
        for event in EVENTS:
            if event["idx"] > since:
                request.write(frame(event["idx"], "job", event))
            if since == 0 and event["idx"] == 2:
                reactor.callLater(0.05, request.transport.abortConnection)
                return NOT_DONE_YET
        request.write(frame(3, "build_finished", FINISHED))
        request.finish()
        return NOT_DONE_YET


class Errors(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        code = int(request.postpath[0])
        request.setResponseCode(code)
        if code == 401:
            return b""
        return json.dumps({"error": {"code": "x", "message": f"refused with {code}"}}).encode()


@pytest.fixture
def server() -> Iterator[tuple[str, Progress]]:
    root = Resource()
    progress = Progress()
    builds = Resource()
    root.putChild(b"api", api := Resource())
    api.putChild(b"v1", v1 := Resource())
    v1.putChild(b"cli", cli := Resource())
    cli.putChild(b"builds", builds)
    builds.putChild(b"b1", b1 := Resource())
    b1.putChild(b"progress", progress)
    root.putChild(b"errors", Errors())
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}", progress
    port.stopListening()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def every_frame(kind: str, data: str) -> bool:
    return True


def all_but_event_2(kind: str, data: str) -> bool:
    assert kind == "job"
    return json.loads(data)["idx"] != 2


@pytest.mark.parametrize(("wants", "handed_on"), [
    (every_frame, [1, 2, 3]),
    # A frame not wanted is not handed on, yet a resume starts after it.
    (all_but_event_2, [1, 3]),
])
@pytest_twisted.ensureDeferred
async def test_a_dropped_stream_resumes_after_the_last_event_seen(
    server: tuple[str, Progress], wants: Any, handed_on: list[int]
) -> None:
    url, progress = server
    client = ApiClient(reactor, url, "t")
    seen: list[int] = []

    async def same_service() -> ApiClient:
        return client

    follower = Follower(
        reactor, client, "b1", lambda raw, e: seen.append(e["idx"]), same_service, wants
    )
    raw, finished = await follower.follow()  # type: ignore[misc]
    assert seen == handed_on
    assert finished == FINISHED
    assert json.loads(raw) == FINISHED
    assert progress.resumed_from == [None, b"2"]


@pytest_twisted.ensureDeferred
async def test_the_statuses_a_display_never_shows_are_left_out_by_the_service_on_every_connection(
    server: tuple[str, Progress],
) -> None:
    url, progress = server
    client = ApiClient(reactor, url, "t")

    async def same_service() -> ApiClient:
        return client

    omit = PlainDisplay(io.StringIO(), BuildProgress("b1", requested=150)).omit
    follower = Follower(
        reactor, client, "b1", lambda raw, e: None, same_service, every_frame, omit
    )
    await follower.follow()
    assert "PARTITION_DELEGATED" in omit and "PARTITION_AVAILABLE" in omit
    assert JsonDisplay.omit == ()
    sent = [",".join(omit).encode()]
    assert progress.omitted == [sent, sent]


@pytest_twisted.ensureDeferred
async def test_a_dropped_stream_with_no_service_left_is_exit_3(
    server: tuple[str, Progress], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "RECONNECT_DEADLINE_S", 0.0)
    url, _ = server

    async def no_service() -> None:
        return None

    follower = Follower(reactor, ApiClient(reactor, url, None), "b1", lambda *_: None, no_service)
    with pytest.raises(CliError) as e:
        await follower.follow()
    assert e.value.exit_code == UNAVAILABLE
    assert "lost the DataBuild service while following build b1" in e.value.message


@pytest_twisted.ensureDeferred
async def test_an_event_that_cannot_be_printed_ends_the_follow_without_reconnecting(
    server: tuple[str, Progress],
) -> None:
    """Stdout closed by its reader (``| head -1``): the error ends the follow at once."""
    url, progress = server
    reconnects: list[None] = []

    async def counted() -> None:
        reconnects.append(None)

    def closed_stdout(raw: str, event: dict[str, Any]) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    follower = Follower(reactor, ApiClient(reactor, url, None), "b1", closed_stdout, counted)
    with pytest.raises(BrokenPipeError):
        await follower.follow()
    assert reconnects == [] and progress.resumed_from == [None]


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_one_sentence_and_exit_3() -> None:
    port = closed_port()
    with pytest.raises(CliError) as e:
        await ApiClient(reactor, f"http://127.0.0.1:{port}", None).get("/api/v1/health")
    assert e.value.exit_code == UNAVAILABLE
    assert e.value.message == (
        f"cannot reach the DataBuild service at http://127.0.0.1:{port}/: connection refused"
    )


@pytest_twisted.ensureDeferred
async def test_error_answers_map_to_exit_codes_with_the_services_message(
    server: tuple[str, Progress],
) -> None:
    client = ApiClient(reactor, server[0], None)
    for status, code in ((400, USAGE), (409, USAGE), (404, NOT_FOUND), (500, UNAVAILABLE)):
        with pytest.raises(CliError) as e:
            await client.get(f"/errors/{status}")
        assert (e.value.exit_code, e.value.message) == (code, f"refused with {status}")
    with pytest.raises(CliError) as e:
        await client.get("/errors/401")
    assert e.value.exit_code == UNAVAILABLE
    assert "refused the token" in e.value.message
