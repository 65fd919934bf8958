"""Test doubles shared by the relay, TCP proxy and WebSocket tests."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection


class FakeTCP(StringTransportWithDisconnection):
    """
    A string transport that, like a TCP one, has a read size and can shut
    its write side down; closing it tells its protocol at once.

    @ivar write_closed: L{loseWriteConnection} was called.
    """

    bufferSize = 65536
    write_closed = False

    def __init__(
        self,
        host: tuple[str, int] = ("127.0.0.1", 8080),
        peer: tuple[str, int] = ("192.0.2.7", 4000),
    ) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", *host),
            peerAddress=IPv4Address("TCP", *peer),
        )

    def loseConnection(self) -> None:
        self.disconnecting = True
        super().loseConnection()

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled
