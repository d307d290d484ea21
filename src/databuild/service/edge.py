"""The edge of the HTTP API: every request passes here before it is routed.

It keeps the service busy while a request is in flight, checks the bearer token, refuses
oversized bodies, keeps percent-encoded path segments whole, and answers anything that goes
wrong with a JSON error instead of a traceback page.
"""

from __future__ import annotations

import hmac

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from databuild.service.idle import IdleTimer
from databuild.service.responses import MAX_BODY_BYTES, ApiError, body_too_large, respond_error

UNAUTHENTICATED = {b"/api/v1/health"}


class ApiEdge(Resource):
    """Wraps the routing resource ``inner``; see the module docstring."""

    isLeaf = True
    log = Logger()

    def __init__(self, inner: Resource, token: str, idle: IdleTimer) -> None:
        super().__init__()
        self._inner = inner
        self._token = b"Bearer " + token.encode("utf-8")
        self._idle = idle

    def render(self, request: IRequest) -> bytes | int:
        release = self._idle.hold()
        request.notifyFinish().addBoth(lambda _: release())
        try:
            self._check(request)
            # Twisted decodes each segment, turning %2F into a separator; route on the raw
            # path instead, so that a ref stays one segment (handlers decode it).
            request.postpath = request.path[1:].split(b"/")
            return self._inner.render(request)
        except ApiError as e:
            return respond_error(request, e)
        except Exception as e:
            self.log.failure(
                "internal error at the edge of {path}",
                path=request.path.decode("ascii", "replace"),
            )
            return respond_error(request, ApiError(500, "internal_error", f"internal error: {e}"))

    def _check(self, request: IRequest) -> None:
        try:
            request.path.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "the request path is not valid UTF-8") from None
        if request.path not in UNAUTHENTICATED:
            given = request.getHeader(b"authorization") or b""
            if not hmac.compare_digest(given, self._token):
                request.setHeader(b"www-authenticate", b'Bearer realm="databuild"')
                raise ApiError(
                    401,
                    "unauthorized",
                    "missing or wrong bearer token; send 'Authorization: Bearer <token>' "
                    "with the token from .databuild/server.json",
                )
        length = request.getHeader(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > MAX_BODY_BYTES:
            raise body_too_large()


class BoundedRequest(Request):
    """Keeps at most one byte more than the body limit, so a huge upload costs no memory/disk.

    What is kept is enough for the handlers to see that the limit was passed (413).
    """

    def handleContentChunk(self, data: bytes) -> None:
        room = MAX_BODY_BYTES + 1 - self.content.tell()
        if room > 0:
            super().handleContentChunk(data[:room])


def api_site(inner: Resource, token: str, idle: IdleTimer) -> Site:
    """The HTTP factory serving the API."""
    site = Site(ApiEdge(inner, token, idle), requestFactory=BoundedRequest)
    site.displayTracebacks = False
    return site
