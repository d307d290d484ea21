"""Separate test hosts: a network namespace joined to this host by a veth pair.

A process started with ``Host.prefix`` in front of its command sees only its own loopback
and the host side of the veth; PostgreSQL and RabbitMQ listen on this host's loopback, so
the test relays them on the veth address with ``tests.multi.proxy.Proxy``.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from attrs import frozen


@frozen
class Host:
    """A network namespace: its name and the address of this host as it sees it."""

    namespace: str
    gateway: str

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def separate_host() -> Iterator[Host]:
    """A namespace with a /30 link to this host; removed afterwards."""
    tag = secrets.token_hex(3)
    namespace, outside, inside = f"dbw{tag}", f"vh{tag}", f"vn{tag}"
    net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("addr", "add", f"{net}.1/30", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", namespace, "addr", "add", f"{net}.2/30", "dev", inside)
        _ip("-n", namespace, "link", "set", inside, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        yield Host(namespace, f"{net}.1")
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
