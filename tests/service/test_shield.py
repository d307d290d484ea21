"""Routes run shielded (``service.api.shielded``): whatever the handler does, the request
gets an answer."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from klein import Klein
from treq.testing import StubTreq
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from databuild.service.api import error_response, shielded


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
