"""A deterministic harness: the real front end and proxy on a memory reactor."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransport,
    StringTransportWithDisconnection,
)
from twisted.python.failure import Failure
from twisted.web import pages

from txlb.config import Config, parse
from txlb.core.registry import Registry
from txlb.http.frontend import Limits
from txlb.http.proxy import HTTPProxy, front_end
from txlb.http.upstream import BackendConnection


def config(backends: int = 2, extra: str = "") -> Config:
    text = "[txlb]\nbackend_timeout = 10s\n" + extra + "\n"
    for i in range(backends):
        text += f"[backend:b{i}]\naddress = 127.0.0.1:{9001 + i}\n"
    return parse(text, "test.ini")


class Client:
    """One client connection to the proxy."""

    def __init__(self, harness: Harness) -> None:
        self.channel = harness.site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        self.transport = StringTransportWithDisconnection(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "192.0.2.7", 4000),
        )
        self.transport.protocol = self.channel
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def received(self) -> bytes:
        return self.transport.value()


class Backend:
    """The backend side of one connection the proxy opened."""

    def __init__(self, proto: BackendConnection, transport: StringTransport) -> None:
        self.proto = proto
        self.transport = transport

    def received(self) -> bytes:
        return self.transport.value()

    def reply(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def close(self) -> None:
        self.transport.loseConnection()


class Harness:
    def __init__(self, backends: int = 2, extra: str = "") -> None:
        self.reactor = MemoryReactorClock()
        self.config = config(backends, extra)
        self.registry = Registry(
            self.config.backends,
            self.reactor,
            outlier=self.config.outlier,
            panic_threshold=self.config.panic_threshold,
        )
        self.records: list[dict[str, Any]] = []
        self.proxy = HTTPProxy(
            self.registry, self.reactor, self.reactor, self.config, self.records.append
        )
        stats = pages.notFound()
        self.site = front_end(
            self.proxy, stats, Limits.from_config(self.config), self.reactor
        )
        self._accepted = 0

    def client(self) -> Client:
        return Client(self)

    def pending_connects(self) -> list[tuple[str, int]]:
        return [(c[0], c[1]) for c in self.reactor.tcpClients[self._accepted :]]

    def accept(self) -> Backend:
        """Complete the oldest pending backend connection attempt."""
        factory = self.reactor.tcpClients[self._accepted][2]
        self._accepted += 1
        proto = factory.buildProtocol(None)
        transport = StringTransportWithDisconnection()
        transport.protocol = proto
        proto.makeConnection(transport)
        return Backend(proto, transport)

    def refuse(self) -> None:
        """Fail the oldest pending backend connection attempt."""
        factory = self.reactor.tcpClients[self._accepted][2]
        self._accepted += 1
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def active(self) -> list[int]:
        return [b.active for b in self.registry.backends]
