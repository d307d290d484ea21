"""Dashboard login codes and sessions, on a controlled clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from databuild.service.dashboard.access import CODE_TTL_S, DashboardAccess, same_origin


class CookieRequest(DummyRequest):
    """A request on port 80 carrying the cookies given."""

    def __init__(self, cookies: dict[bytes, bytes]) -> None:
        super().__init__([b""])
        self.cookies = cookies

    def getCookie(self, key: bytes) -> bytes | None:
        return self.cookies.get(key)


def with_cookie(access: DashboardAccess, session: str | None) -> DummyRequest:
    return CookieRequest({} if session is None else {b"databuild_session_80": session.encode()})


def test_a_code_opens_one_session_once() -> None:
    access = DashboardAccess(Clock())
    code = access.issue_code()
    session = access.redeem(code)
    assert session is not None
    assert access.redeem(code) is None
    assert access.valid(with_cookie(access, session))
    assert not access.valid(with_cookie(access, "forged"))
    assert not access.valid(with_cookie(access, None))


def test_a_code_expires_after_sixty_seconds() -> None:
    clock = Clock()
    access = DashboardAccess(clock)
    late, on_time = access.issue_code(), access.issue_code()
    clock.advance(CODE_TTL_S - 1)
    assert access.redeem(on_time) is not None
    clock.advance(2)
    assert access.redeem(late) is None


def test_origin_must_be_the_service_itself() -> None:
    request = DummyRequest([b""])
    request.requestHeaders.setRawHeaders(b"host", [b"127.0.0.1:8080"])
    assert not same_origin(request)
    request.requestHeaders.setRawHeaders(b"origin", [b"http://evil.example"])
    assert not same_origin(request)
    request.requestHeaders.setRawHeaders(b"origin", [b"http://127.0.0.1:8080"])
    assert same_origin(request)


def requested_as(host: bytes) -> DummyRequest:
    request = DummyRequest([b""])  # DummyRequest's own address is port 80
    request.requestHeaders.setRawHeaders(b"host", [host])
    return request


def test_the_dashboard_has_a_random_name_of_its_own_under_localhost() -> None:
    one, other = DashboardAccess(Clock()), DashboardAccess(Clock())
    assert one.host.endswith(".localhost") and len(one.host) > len(".localhost") + 16
    assert one.host != other.host


def test_a_login_link_over_loopback_names_the_dashboard_elsewhere_the_name_given() -> None:
    access = DashboardAccess(Clock())
    for given in (b"127.0.0.1:8081", b"localhost:8081", b"[::1]:8081", access.host.encode()
                  + b":8081"):
        assert access.login_url(requested_as(given), "c") == (
            f"http://{access.host}:8081/login?code=c"
        )
    assert access.login_url(requested_as(b"localhost"), "c") == (
        f"http://{access.host}:80/login?code=c"
    )
    assert access.login_url(requested_as(b"builds.example.com:8081"), "c") == (
        "http://builds.example.com:8081/login?code=c"
    )


def test_a_code_followed_at_another_loopback_name_is_exchanged_once() -> None:
    access = DashboardAccess(Clock())
    assert access.elsewhere(requested_as(b"127.0.0.1:8081"))
    assert not access.elsewhere(requested_as(access.host.encode() + b":8081"))
    assert not access.elsewhere(requested_as(b"builds.example.com"))
    code = access.issue_code()
    fresh = access.exchange(code)
    assert fresh is not None and fresh != code
    assert access.exchange(code) is None
    assert access.redeem(fresh) is not None
