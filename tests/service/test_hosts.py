"""Reading ``Host`` headers and the names the service answers to (pure logic)."""

from __future__ import annotations

import pytest

from databuild.service.hosts import (
    AllowedHosts,
    host_and_port,
    is_loopback_name,
    parse_host_name,
)


@pytest.mark.parametrize(
    ("header", "given"),
    [(b"127.0.0.1:8080", ("127.0.0.1", 8080)), (b"LocalHost", ("localhost", None)),
     (b"[::1]:80", ("::1", 80)), (b"[0:0::1]", ("::1", None)),
     (b"example.com.:443", ("example.com", 443)), (b"", None), (None, None), (b"[::1", None),
     (b"[::1]x", None), (b"::1", None), (b"\xff", None)],
)
def test_a_host_header_gives_its_name_and_port(header: bytes | None, given: object) -> None:
    assert host_and_port(header) == given


def test_loopback_names() -> None:
    assert all(map(is_loopback_name, ["localhost", "127.0.0.1", "127.9.9.9", "::1"]))
    assert not any(map(is_loopback_name, [None, "example.com", "10.0.0.1", "x.localhost"]))


def test_allowed_names_and_the_address_reached() -> None:
    hosts = AllowedHosts.of({"box", "box.lan"}, ("builds.example.com",), ["abc.localhost"])
    for ok in (b"localhost:1", b"box", b"BOX.lan:9", b"builds.example.com", b"abc.localhost:5",
               b"127.0.0.1:8080"):
        assert hosts.allows(ok, "127.0.0.1"), ok
    for refused in (b"rebind.example", b"x.localhost", b"127.0.0.2", b"[::1]:80", None, b""):
        assert not hosts.allows(refused, "127.0.0.1"), refused
    assert hosts.allows(b"[::1]:80", "::1")
    assert hosts.allows(b"10.0.0.5:80", "::ffff:10.0.0.5")  # a dual-stack listener's address


def test_an_allowed_host_is_a_name_or_an_address_without_a_port() -> None:
    assert parse_host_name("Builds.Example.COM.") == "builds.example.com"
    assert parse_host_name("[::1]") == "::1"
    assert parse_host_name("10.0.0.1") == "10.0.0.1"
    for bad in ("x:80", "a b", "-x", "x" * 64, "http://x", ""):
        with pytest.raises(ValueError, match="--allowed-host"):
            parse_host_name(bad)
