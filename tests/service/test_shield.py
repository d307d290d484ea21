"""Routes run shielded (``service.api.shielded``): whatever the handler does, the request
gets an answer."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from klein import Klein
from tests.polling import poll_until_async
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from databuild.service.api import error_response, shielded
from databuild.service.responses import LONG_LIST, json_bytes, json_in_slices

BIG = {
    "build_request_id": "b1",
    "tasks": [{"job_run_id": f"r{i}", "message": "déjà \"vu\"", "exit_code": None}
              for i in range(3 * LONG_LIST)],
    "job_graph": {"outputs": [f"a/{i}" for i in range(LONG_LIST + 1)], "empty": []},
    "partitions": [],
}


class Routes:
    app = Klein()

    @app.handle_errors(Exception)
    def _error(self, request: IRequest, failure: Failure) -> bytes:
        assert isinstance(request, Request)
        return error_response(request, failure)

    @app.route("/unencodable")
    @shielded
    async def unencodable(self, request: Request) -> dict[str, Any]:
        return {"value": object()}

    @app.route("/big")
    @shielded
    async def big(self, request: Request) -> dict[str, Any]:
        return BIG

    @app.route("/big-unencodable")
    @shielded
    async def big_unencodable(self, request: Request) -> dict[str, Any]:
        return {"tasks": [*BIG["tasks"], object()]}

    @app.route("/fine")
    @shielded
    async def fine(self, request: Request) -> dict[str, Any]:
        return {"value": 1}


@pytest_twisted.ensureDeferred
async def test_an_answer_that_cannot_be_encoded_is_a_json_500_not_a_hang() -> None:
    client = StubTreq(Routes().app.resource())
    response = await client.get("http://localhost/unencodable")
    body = json.loads(await response.content())
    assert response.code == 500
    assert body["error"]["code"] == "internal_error"
    assert "TypeError" in body["error"]["message"]
    fine = await client.get("http://localhost/fine")
    assert fine.code == 200 and json.loads(await fine.content()) == {"value": 1}


@pytest_twisted.ensureDeferred
async def test_a_document_with_long_lists_is_encoded_in_slices_to_the_same_text() -> None:
    encoding = json_in_slices(BIG)
    assert not encoding.called  # the reactor gets control back between slices
    assert await encoding == json_bytes(BIG)
    small = {"tasks": BIG["tasks"][:LONG_LIST], "graph": {"outputs": ["a/1"]}}
    encoded = json_in_slices(small)
    assert encoded.called and encoded.result == json_bytes(small)  # at once


@pytest_twisted.ensureDeferred
async def test_a_big_answer_is_the_whole_document_and_a_big_unencodable_one_a_500() -> None:
    client = StubTreq(Routes().app.resource())

    async def flushed(d: Deferred[Any], what: str) -> Any:
        # The answer comes after the reactor ran the slices: StubTreq delivers it on flush.
        done: list[Any] = []
        d.addBoth(lambda result: done.append(True) or result)
        await poll_until_async(lambda: client.flush() or done, what)
        return await d

    async def get(path: str) -> tuple[Any, bytes]:
        response = await flushed(client.get(f"http://localhost{path}"), f"the answer of {path}")
        return response, await flushed(response.content(), f"the body of {path}")

    response, body = await get("/big")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["application/json; charset=utf-8"]
    assert body == json_bytes(BIG)
    failed, body = await get("/big-unencodable")
    assert failed.code == 500
    assert json.loads(body)["error"]["code"] == "internal_error"
