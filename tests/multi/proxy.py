"""A TCP proxy between a service and PostgreSQL that a test can freeze or cut."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

from attrs import define, field


@define(eq=False)
class _Drop:
    """Drop the one connection whose client sends ``at``: before passing it on, or, with
    ``answer``, when the server's answer holds ``answer`` after that (a command tag such as
    ``b"COMMIT"``: the server did it, and only its answer is lost)."""

    at: bytes
    answer: bytes | None
    link: object = None
    """The connection ``at`` went by on, once it did."""


@define(eq=False)
class Proxy:
    """Forwards every connection made to ``port`` to ``target``, until frozen or cut.

    Frozen, it keeps every connection open but passes nothing on (a network partition as a
    process sees it: calls hang); cut, it closes them all and refuses new ones. ``drop_at``
    closes one connection at a chosen statement.
    """

    target: tuple[str, int]
    port: int = 0
    host: str = "127.0.0.1"
    """The address it listens on."""
    frozen: bool = False
    closed: bool = False
    dropped: int = 0
    """Connections closed by ``drop_at``."""
    _listener: socket.socket = field(init=False)
    _sockets: list[socket.socket] = field(factory=list)
    _drop: _Drop | None = None
    _lock: threading.Lock = field(factory=threading.Lock)

    def __attrs_post_init__(self) -> None:
        self._listener = socket.create_server((self.host, 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            link = (client, server)
            for src, dst in link, (server, client):
                threading.Thread(
                    target=self._pump, args=(src, dst, link, src is client), daemon=True
                ).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, link: object, upstream: bool
    ) -> None:
        try:
            while not self.closed:
                if self.frozen:
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([src], [], [], 0.1)
                if readable:
                    data = src.recv(65536)
                    if not data or not self._passes(data, link, upstream):
                        break
                    dst.sendall(data)
        except (OSError, ValueError):  # closed by the other direction's thread
            pass
        finally:
            for s in (src, dst):
                s.close()

    def _passes(self, data: bytes, link: object, upstream: bool) -> bool:
        """Whether ``data`` goes on; False closes the connection (a drop)."""
        with self._lock:
            drop = self._drop
            if drop is None:
                return True
            if drop.link is None:
                if not upstream or drop.at not in data:
                    return True
                drop.link = link
                if drop.answer is not None:
                    return True
            elif upstream or drop.link is not link or not drop.answer or drop.answer not in data:
                return True
            self._drop = None
            self.dropped += 1
            return False

    def drop_at(self, at: bytes, *, answer: bytes | None = None) -> None:
        """Close the first connection whose client sends ``at`` (see ``_Drop``)."""
        with self._lock:
            self._drop = _Drop(at, answer)

    def freeze(self) -> None:
        self.frozen = True

    def cut(self) -> None:
        self.closed = True
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def uri(self, direct: str) -> str:
        """``direct``, the URI of the database, made to go through this proxy."""
        host, port = self.target
        return direct.replace(f"{host}:{port}", f"{self.host}:{self.port}", 1)
