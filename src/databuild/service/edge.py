"""The edge of the HTTP service: every request passes here before it is routed.

It refuses a request whose ``Host`` does not name the service (DNS rebinding; see
service/hosts.py), keeps the service busy while a request is in flight, checks the bearer
token (API; the scheme ``Bearer`` in any case, RFC 7235) or the session cookie and ``Origin``
(dashboard), refuses oversized bodies, keeps percent-encoded path segments whole, and answers
anything that goes wrong with a JSON error instead of a traceback, even a request that is not
valid HTTP. A ``GET`` of one of the API's ``hot`` paths (exactly) is answered by its handler
directly, without routing (see service/hot.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from databuild.service.dashboard.access import DashboardAccess, same_origin
from databuild.service.hosts import AllowedHosts, host_name
from databuild.service.idle import IdleTimer
from databuild.service.responses import (
    JSON_TYPE,
    MAX_BUILD_BODY_BYTES,
    ApiError,
    body_limit,
    body_too_large,
    json_bytes,
    respond_error,
)

UNAUTHENTICATED = {b"/api/v1/health"}
PUBLIC_PAGES = {b"/login", b"/welcome", b"/ui/alive", b"/favicon.ico"}
"""Dashboard paths open without a session (and ``/static/...``)."""
NOT_BUSY = {b"/ui/alive"}
"""Requests that do not count as activity: an open tab asks this to see the service is up."""
LOGIN_HELP = b"/welcome"


def is_api(path: bytes) -> bool:
    """Whether ``path`` belongs to the bearer-token API (everything else is the dashboard)."""
    return path.startswith(b"/api/") or path == b"/metrics"


HotRoutes = Mapping[bytes, Callable[[Request], bytes | int]]


class ApiEdge(Resource):
    """Wraps the routing resource ``inner``; see the module docstring."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        api: Resource,
        dashboard: Resource,
        token: str,
        idle: IdleTimer,
        access: DashboardAccess,
        hosts: AllowedHosts,
        hot: HotRoutes | None = None,
    ) -> None:
        super().__init__()
        self._hosts = hosts
        self._api = api
        self._dashboard = dashboard
        self._hot = hot or {}
        self._token = token.encode("utf-8")
        self._idle = idle
        self._access = access

    def render(self, request: Request) -> bytes | int:
        given = request.getHeader(b"host")
        if not self._hosts.allows(given, request.getHost().host):  # not activity either
            return respond_error(request, bad_host(host_name(given)))
        if request.path not in NOT_BUSY:
            release = self._idle.hold()
            request.notifyFinish().addBoth(lambda _: release())
        try:
            self._check_request(request)
            if is_api(request.path):
                self._check(request)
                hot = self._hot.get(request.path) if request.method == b"GET" else None
                if hot is not None:
                    return hot(request)
                inner = self._api
            elif not self._admitted(request):
                return b""
            else:
                inner = self._dashboard
            # Twisted decodes each segment, turning %2F into a separator; route on the raw
            # path instead, so that a ref stays one segment (handlers decode it).
            request.postpath = request.path[1:].split(b"/")
            return inner.render(request)
        except ApiError as e:
            return respond_error(request, e)
        except Exception as e:
            self.log.failure(
                "internal error at the edge of {path}",
                path=request.path.decode("ascii", "replace"),
            )
            return respond_error(request, ApiError(500, "internal_error", f"internal error: {e}"))

    def _check_request(self, request: Request) -> None:
        try:
            request.path.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "the request path is not valid UTF-8") from None
        length = request.getHeader(b"content-length")
        limit = body_limit(request.path)
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise body_too_large(limit)

    def _admitted(self, request: Request) -> bool:
        """Whether a dashboard request may go on; if not, it has been answered (redirect)."""
        path = request.path
        if path in PUBLIC_PAGES or path.startswith(b"/static/"):
            return True
        if request.method != b"GET" and not same_origin(request):
            raise ApiError(
                403, "bad_origin", "dashboard actions must come from the dashboard's own pages"
            )
        if self._access.valid(request):
            return True
        request.setResponseCode(303)
        request.setHeader(b"location", LOGIN_HELP)
        return False

    def _check(self, request: Request) -> None:
        """The bearer token of an API request."""
        if request.path not in UNAUTHENTICATED:
            scheme, _, given = (request.getHeader(b"authorization") or b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
                request.setHeader(b"www-authenticate", b'Bearer realm="databuild"')
                raise ApiError(
                    401,
                    "unauthorized",
                    "missing or wrong bearer token; send 'Authorization: Bearer <token>' "
                    "with the token from .databuild/server.json",
                )


def bad_host(name: str | None) -> ApiError:
    """The error for a request whose ``Host`` (``name``) does not name the service."""
    return ApiError(
        400, "bad_host",
        f"this service does not answer to the host name {name!r} (DNS rebinding?); it answers "
        "to its address, localhost and this host's names; `twistd databuild --allowed-host "
        "NAME` adds one" if name else "the request has no usable Host header",
    )  # fmt: skip


class BoundedRequest(Request):
    """Keeps at most one byte more than the largest body limit, so a huge upload costs no
    memory/disk beyond it.

    What is kept is enough for the handlers to see that their path's limit was passed (413);
    the path is not known yet while the body arrives.
    """

    def handleContentChunk(self, data: bytes) -> None:
        assert self.content is not None  # made by gotLength, before any chunk
        room = MAX_BUILD_BODY_BYTES + 1 - self.content.tell()
        if room > 0:
            super().handleContentChunk(data[:room])


class ApiChannel(HTTPChannel):
    """Answers a request it cannot parse (a control character in a header, a bad request line
    or form body, ...) with the JSON error too, where Twisted sends a bare 400."""

    def _respondToBadRequestAndDisconnect(self) -> None:
        body = json_bytes({"error": {
            "code": "bad_request",
            "message": "the request could not be parsed as HTTP/1.1 "
                       "(its request line, a header, or a form body)",
        }})
        assert self.transport is not None  # it is answering a request on it
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: " + JSON_TYPE
            + b"\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
        )
        self.loseConnection()


def api_site(
    api: Resource,
    dashboard: Resource,
    token: str,
    idle: IdleTimer,
    access: DashboardAccess,
    hosts: AllowedHosts,
    hot: HotRoutes | None = None,
) -> Site:
    """The HTTP factory serving the API and the dashboard."""
    site = Site(
        ApiEdge(api, dashboard, token, idle, access, hosts, hot), requestFactory=BoundedRequest
    )
    # Plain HTTP/1.1 channels: Twisted's stubs type ``protocol`` as its own factory function.
    site.protocol = ApiChannel  # type: ignore[assignment, method-assign]
    site.displayTracebacks = False
    return site
