"""Choosing the port: the preferred one, else the next free one of a range (SPEC §5.1)."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorTCP
from twisted.logger import Logger

log = Logger()


def port_number(port: IListeningPort) -> int:
    """The TCP port ``port`` listens on."""
    address = port.getHost()
    assert isinstance(address, IPv4Address | IPv6Address), address
    return address.port


async def listen_first_free(
    reactor: IReactorTCP,
    interface: str,
    preferred: int,
    extra: int,
    factory: IProtocolFactory,
) -> IListeningPort:
    """Listen on ``preferred``, else on the first free port of the ``extra`` ports after it.

    Port 0 means any free port. Raises CannotListenError naming the ports tried when all are
    taken.
    """
    endpoint_type = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
    candidates = [0] if preferred == 0 else range(preferred, min(preferred + extra, 65535) + 1)
    last: CannotListenError | None = None
    for port in candidates:
        try:
            return await endpoint_type(reactor, port, interface=interface).listen(factory)
        except CannotListenError as e:
            log.info("port {port} on {interface} is taken", port=port, interface=interface)
            last = e
    assert last is not None
    raise CannotListenError(
        interface,
        preferred,
        f"no free port among {candidates[0]}..{candidates[-1]} ({last.socketError})",
    )
