"""Who may see the dashboard: one-time login codes and the sessions they open (SPEC §8).

The session belongs to this service alone. Cookies ignore ports: one set for ``127.0.0.1``
reaches every server on any port of ``127.0.0.1`` the browser visits, which could replay it.
Cookies do not ignore host names, though, and browsers resolve every ``*.localhost`` name to
the loopback address themselves (RFC 6761). So a service reached over loopback serves its
dashboard under a name of its own, ``<random>.localhost`` (``DashboardAccess.host``): the
session cookie is set for that name alone, and another local server gets it only if the
browser is sent to that name on its port, which needs the random part, told only to holders of
the token (the login-code answer) or of a valid login code. A login link followed at another
loopback name (``127.0.0.1``, ``localhost``) spends its code and sends the browser on to the
dashboard's name with a fresh one; no cookie is ever set for those names.
"""

from __future__ import annotations

import hmac
import secrets

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from databuild.service.hosts import LOCALHOST, host_and_port, host_name, is_loopback_name

CODE_TTL_S = 60.0
SESSION_TTL_S = 12 * 3600.0


def cookie_name(request: IRequest) -> bytes:
    """The session cookie of this service: cookies ignore ports, so the name carries it."""
    return b"databuild_session_%d" % request.getHost().port


def same_origin(request: IRequest) -> bool:
    """Whether the request's ``Origin`` is the service itself (what a form POST sends)."""
    origin = request.getHeader(b"origin")
    host = request.getHeader(b"host")
    return origin is not None and host is not None and hmac.compare_digest(
        origin, b"http://" + host
    )


@define
class DashboardAccess:
    """Issues login codes (valid once, for ``CODE_TTL_S``) and checks session cookies."""

    clock: IReactorTime
    host: str = field(factory=lambda: f"{secrets.token_hex(10)}.{LOCALHOST}")
    """The dashboard's own name on loopback; see the module docstring."""
    _codes: dict[str, float] = field(factory=dict)
    _sessions: dict[str, float] = field(factory=dict)

    def issue_code(self) -> str:
        """A fresh one-time login code."""
        self._prune()
        code = secrets.token_urlsafe(24)
        self._codes[code] = self.clock.seconds() + CODE_TTL_S
        return code

    def _spend(self, code: str) -> bool:
        """Whether ``code`` is valid and unused; it is spent either way."""
        expires = self._codes.pop(code, None)
        return expires is not None and expires >= self.clock.seconds()

    def redeem(self, code: str) -> str | None:
        """A new session for a valid unused ``code`` (which is then spent), else None."""
        if not self._spend(code):
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[session] = self.clock.seconds() + SESSION_TTL_S
        return session

    def exchange(self, code: str) -> str | None:
        """A fresh code for a valid unused ``code`` (which is then spent), else None."""
        return self.issue_code() if self._spend(code) else None

    def elsewhere(self, request: IRequest) -> bool:
        """Whether ``request`` came over loopback by a name not the dashboard's own, where
        no session cookie is set."""
        name = host_name(request.getHeader(b"host"))
        return name != self.host and is_loopback_name(name)

    def login_url(self, request: IRequest, code: str) -> str:
        """The link that logs in with ``code``: at the dashboard's own name when ``request``
        came over loopback, else at the name and port it came by."""
        header = request.getHeader(b"host")
        name, port = host_and_port(header) or (None, None)
        if name == self.host or is_loopback_name(name):
            where = f"{self.host}:{port or request.getHost().port}"
        else:
            where = (header or b"").decode("ascii")  # the edge let it in: a name of ours
        return f"http://{where}/login?code={code}"

    def valid(self, request: IRequest) -> bool:
        """Whether ``request`` carries a live session cookie."""
        session = request.getCookie(cookie_name(request))
        if session is None:
            return False
        expires = self._sessions.get(session.decode("latin-1"))
        return expires is not None and expires >= self.clock.seconds()

    def set_cookie(self, request: Request, session: str) -> None:
        """Send ``session`` as an HttpOnly, SameSite=Strict cookie."""
        request.addCookie(
            cookie_name(request), session.encode("ascii"), path=b"/", httpOnly=True,
            sameSite="strict", max_age=str(int(SESSION_TTL_S)).encode("ascii"),
        )

    def _prune(self) -> None:
        now = self.clock.seconds()
        for table in (self._codes, self._sessions):
            for key in [k for k, expires in table.items() if expires < now]:
                del table[key]

