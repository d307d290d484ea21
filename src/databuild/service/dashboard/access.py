"""Who may see the dashboard: one-time login codes and the sessions they open (SPEC §8)."""

from __future__ import annotations

import hmac
import secrets

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.server import Request

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
    _codes: dict[str, float] = field(factory=dict)
    _sessions: dict[str, float] = field(factory=dict)

    def issue_code(self) -> str:
        """A fresh one-time login code."""
        self._prune()
        code = secrets.token_urlsafe(24)
        self._codes[code] = self.clock.seconds() + CODE_TTL_S
        return code

    def redeem(self, code: str) -> str | None:
        """A new session for a valid unused ``code`` (which is then spent), else None."""
        expires = self._codes.pop(code, None)
        if expires is None or expires < self.clock.seconds():
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[session] = self.clock.seconds() + SESSION_TTL_S
        return session

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
