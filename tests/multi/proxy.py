"""A TCP proxy between a service and PostgreSQL that a test can freeze or cut."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

from attrs import define, field


@define(eq=False)
class Proxy:
    """Forwards every connection made to ``port`` to ``target``, until frozen or cut.

    Frozen, it keeps every connection open but passes nothing on (a network partition as a
    process sees it: calls hang); cut, it closes them all and refuses new ones.
    """

    target: tuple[str, int]
    port: int = 0
    host: str = "127.0.0.1"
    """The address it listens on."""
    frozen: bool = False
    closed: bool = False
    _listener: socket.socket = field(init=False)
    _sockets: list[socket.socket] = field(factory=list)

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
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.closed:
                if self.frozen:
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([src], [], [], 0.1)
                if readable:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
        except (OSError, ValueError):  # ValueError: the socket was closed by ``cut``
            pass
        finally:
            for s in (src, dst):
                s.close()

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
