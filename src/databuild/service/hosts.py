"""The names the service answers to (SPEC §8, DNS rebinding), and how a ``Host`` header is read.

A page of any web site can make a browser send requests to the service by giving its own DNS
name the service's address (DNS rebinding); those requests carry that name in ``Host``. So the
service serves a request only if its ``Host`` names the service: the address the request
reached, ``localhost``, the dashboard's own name (``DashboardAccess.host``), one of this host's
names, or a name given with ``--allowed-host``. Anything else is refused (400) at the edge.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

from attrs import frozen

from databuild.service.settings import is_loopback

LOCALHOST = "localhost"
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def parse_host_name(value: str) -> str:
    """A DNS name or IP address for ``--allowed-host``, lower-cased (a port is not part of it)."""
    name = value.strip().lower().rstrip(".")
    if len(name) <= 253 and _NAME.fullmatch(name):
        return name
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        raise ValueError(
            f"--allowed-host must be a host name or an IP address (no port), not {value!r}"
        ) from None


def host_and_port(header: bytes | None) -> tuple[str, int | None] | None:
    """The name in a ``Host`` header, lower-cased (an IPv6 address without its brackets, in
    its short form), and its port if it gives one; None if there is no usable name."""
    if not header:
        return None
    try:
        text = header.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        name, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = text.partition(":")
    name = name.rstrip(".")
    try:
        name = str(ipaddress.ip_address(name))
    except ValueError:
        if not name or ":" in name:
            return None
    return name, int(port) if port.isdigit() else None


def host_name(header: bytes | None) -> str | None:
    """The name in a ``Host`` header (see ``host_and_port``), or None."""
    given = host_and_port(header)
    return None if given is None else given[0]


def is_loopback_name(name: str | None) -> bool:
    """Whether a ``Host`` name reaches this host's loopback: ``localhost`` or a loopback
    address (``*.localhost`` too, but only the dashboard's own such name is served)."""
    if name is None or name == LOCALHOST:
        return name is not None
    try:
        return is_loopback(name)
    except ValueError:
        return False


def own_names() -> set[str]:
    """This host's names: its host name and fully qualified name (may ask the resolver once,
    so it is called at start, never while serving)."""
    return {n.lower() for n in (socket.gethostname(), socket.getfqdn()) if n}


@frozen
class AllowedHosts:
    """The names a request's ``Host`` may give; the address it reached is always one."""

    names: frozenset[str]

    @classmethod
    def of(cls, *groups: Iterable[str]) -> AllowedHosts:
        """``localhost`` and the names of ``groups`` (each already lower-case)."""
        return cls(frozenset({LOCALHOST}.union(*groups)))

    def allows(self, header: bytes | None, reached: str) -> bool:
        """Whether the ``Host`` header names this service; ``reached`` is the local address
        the request came in on."""
        name = host_name(header)
        if name is None:
            return False
        if name in self.names:
            return True
        try:
            return _unmapped(name) == _unmapped(reached)
        except ValueError:
            return False


def _unmapped(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address, an IPv4 one mapped into IPv6 (a dual-stack listener's) as IPv4."""
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped or ip
