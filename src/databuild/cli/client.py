"""The HTTP side of the CLI: a small treq client of the DataBuild API (SPEC §5.4).

Every failure becomes a CliError with one sentence and the exit code of SPEC §6: the service
unreachable (3), an error answer (2, 3 or 4 by its HTTP status).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import quote, urlencode, urljoin

import treq
from attrs import frozen
from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import IResponse

from databuild.cli.exits import UNAVAILABLE, CliError, exit_code_for_http

DEFAULT_TIMEOUT_S = 60.0
HEALTH_TIMEOUT_S = 5.0
HEALTH_PATH = "/api/v1/health"
ANALYZE_TIMEOUT_S = 600.0


@frozen
class Answer:
    """A successful API answer: the raw body (printed as is by ``--format json``) and its JSON."""

    status: int
    raw: bytes
    doc: Any


def segment(value: str) -> str:
    """A ref, label or id percent-encoded as one path segment (``/`` as ``%2F``)."""
    return quote(value, safe="")


def describe_failure(exc: BaseException) -> str:
    """Why a request got no answer, in a few words."""
    if isinstance(exc, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, defer.TimeoutError | error.TimeoutError):
        return "no answer in time"
    if isinstance(exc, ResponseFailed | ResponseNeverReceived):
        reasons = getattr(exc, "reasons", None) or []
        if reasons and not reasons[0].check(error.ConnectionDone, error.ConnectionLost):
            return describe_failure(reasons[0].value)
        return "the connection closed before an answer came"
    if isinstance(exc, error.ConnectError):
        return exc.osError if isinstance(getattr(exc, "osError", None), str) else str(exc)
    return str(exc) or type(exc).__name__


class ApiClient:
    """Requests to one DataBuild service, with its bearer token."""

    def __init__(
        self, reactor: IReactorTCP, base_url: str, token: str | None, token_from: str = ""
    ) -> None:
        self.reactor = reactor
        self.base_url = base_url.rstrip("/") + "/"
        self._token_hint = ""
        """Said after a 401: where the token came from (an environment variable)."""
        if token_from:
            self._token_hint = (
                f"; set {token_from} to the service's token" if not token
                else f"; is {token_from} the service's token?"
            )
        self._headers: dict[bytes | str, list[bytes | str]] = {b"Accept": [b"application/json"]}
        if token:
            self._headers[b"Authorization"] = [f"Bearer {token}".encode()]
        pool = HTTPConnectionPool(reactor, persistent=True)
        self._http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    def url(self, path: str, params: Mapping[str, object] | None = None) -> str:
        """The URL of ``path`` on the service, with the query of the non-None ``params``."""
        url = urljoin(self.base_url, path.lstrip("/"))
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return f"{url}?{urlencode(query)}" if query else url

    async def get(
        self, path: str, params: Mapping[str, object] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Answer:
        """GET ``path``; a CliError if the service cannot be reached or answers an error."""
        return await self._call("GET", self.url(path, params), None, timeout)

    async def post(
        self, path: str, body: object = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> Answer:
        """POST ``body`` as JSON to ``path``; errors as for ``get``."""
        data = None if body is None else json.dumps(body).encode()
        return await self._call("POST", self.url(path), data, timeout)

    async def health(self, timeout: float = HEALTH_TIMEOUT_S) -> Answer:
        """``GET /api/v1/health`` (no token needed); a CliError (exit 3) if what answers is
        not a DataBuild service, or errors as for ``get``."""
        status, raw = await self._send("GET", self.url(HEALTH_PATH), None, timeout)
        doc = _json_or_none(raw)
        if status >= 400 and _is_error_document(doc):  # DataBuild's own refusal (its Host)
            return self.answer(status, raw)
        # "unavailable" is a DataBuild service whose event log is gone: it says why on each call.
        if not (
            isinstance(doc, Mapping)
            and doc.get("status") in ("ok", "unavailable")
            and "workspace" in doc
        ):
            raise CliError(
                f"{self.base_url} is not a DataBuild service: it answered {HEALTH_PATH} with "
                f"HTTP {status} and no DataBuild health document; check DATABUILD_SERVICE_URL",
                UNAVAILABLE,
            )
        return Answer(status, raw, doc)

    async def _call(self, method: str, url: str, data: bytes | None, timeout: float) -> Answer:
        return self.answer(*await self._send(method, url, data, timeout))

    async def _send(
        self, method: str, url: str, data: bytes | None, timeout: float
    ) -> tuple[int, bytes]:
        d = defer.ensureDeferred(self._exchange(method, url, data))
        d.addTimeout(timeout, cast(IReactorTime, self.reactor))
        try:
            return await d
        except Exception as e:
            raise self.unreachable(e) from None

    async def _exchange(self, method: str, url: str, data: bytes | None) -> tuple[int, bytes]:
        headers = dict(self._headers)
        if data is not None:
            headers[b"Content-Type"] = [b"application/json"]
        response = await self._http.request(method, url, headers=headers, data=data)
        return response.code, await treq.content(response)

    def unreachable(self, exc: BaseException) -> CliError:
        """The error (exit 3) for a request that got no answer."""
        return CliError(
            f"cannot reach the DataBuild service at {self.base_url}: {describe_failure(exc)}",
            UNAVAILABLE,
        )

    def answer(self, status: int, raw: bytes) -> Answer:
        """The answer, or the CliError for an error status or a body that is not JSON."""
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
            if status < 400:
                raise CliError(
                    f"the service at {self.base_url} answered with something that is not JSON",
                    UNAVAILABLE,
                ) from None
        if status >= 400:
            hint = self._token_hint if status == 401 else ""
            raise CliError(error_message(status, doc) + hint, exit_code_for_http(status))
        return Answer(status, raw, doc)

    async def open_stream(self, path: str, last_event_id: str | None) -> IResponse:
        """Start reading a Server-Sent Events stream; the body is left unread."""
        headers = dict(self._headers)
        headers[b"Accept"] = [b"text/event-stream"]
        if last_event_id is not None:
            headers[b"Last-Event-ID"] = [last_event_id.encode()]
        d = self._http.get(self.url(path), headers=headers, unbuffered=True)
        d.addTimeout(DEFAULT_TIMEOUT_S, cast(IReactorTime, self.reactor))
        try:
            response = await d
        except Exception as e:
            raise self.unreachable(e) from None
        if response.code >= 400:
            self.answer(response.code, await treq.content(response))
        return response


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _is_error_document(doc: object) -> bool:
    """Whether ``doc`` is an API error of SPEC §5.4's shape."""
    return isinstance(doc, Mapping) and isinstance(doc.get("error"), Mapping)


def error_message(status: int, doc: object) -> str:
    """The message of an API error document, or a sentence about the bare status."""
    if _is_error_document(doc):
        message = doc["error"].get("message")  # type: ignore[index]
        if message:
            return str(message)
    if status == 401:
        return "the service refused the token (HTTP 401); is DATABUILD_SERVICE_TOKEN right?"
    return f"the service answered HTTP {status}"
