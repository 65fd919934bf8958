"""
The one deterministic harness: txlb's real front end, proxies and registry
(built by C{Registry.from_config}, as C{tap} builds it) on a memory reactor,
in HTTP mode or TCP mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from random import Random
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web import pages

from tests.relay_support import FakeTCP
from txlb.config import BackendConfig, BalancingConfig, Config, OutlierConfig, parse
from txlb.core.registry import Registry
from txlb.http.proxy import HTTPProxy
from txlb.http.routing import front_end
from txlb.tcp.proxy import TCPProxy, TCPProxyFactory

_MODES = {
    "http": "[txlb]\nbackend_timeout = 10s\n",
    "tcp": (
        "[txlb]\nmode = tcp\nstats_listen = tcp:9000\nconnect_timeout = 2s\n"
        "idle_timeout = 1m\n"
    ),
}


def config(
    backends: int = 2, extra: str = "", backend_extra: str = "", mode: str = "http"
) -> Config:
    """
    A parsed lb.ini: C{extra} goes in C{[txlb]} (or starts other sections),
    C{backend_extra} in every backend's section; backends are b0, b1 ... on
    127.0.0.1:9001, 9002 ...
    """
    text = _MODES[mode] + extra + "\n"
    for i in range(backends):
        text += f"[backend:b{i}]\naddress = 127.0.0.1:{9001 + i}\n{backend_extra}\n"
    return parse(text, "test.ini")


class Client:
    """One client connection accepted by the proxy."""

    def __init__(self, factory: Factory, peer: str = "192.0.2.7") -> None:
        self.proto = factory.buildProtocol(IPv4Address("TCP", peer, 4000))
        self.transport = FakeTCP(peer=(peer, 4000))
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def received(self) -> bytes:
        return self.transport.value()


class Backend:
    """The backend end of one connection the proxy opened."""

    def __init__(self, proto: Any, transport: FakeTCP) -> None:
        self.proto = proto
        self.transport = transport

    def received(self) -> bytes:
        return self.transport.value()

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    reply = send

    def close(self) -> None:
        self.transport.loseConnection()


class Harness:
    """
    The proxy of one mode over C{backends} backends on a memory reactor.

    @ivar records: the access log's records (HTTP mode).
    @ivar observed: (backend, status) of each observed request or connection.
    @ivar seconds: the seconds observed with each.
    """

    def __init__(
        self,
        backends: int = 2,
        extra: str = "",
        backend_extra: str = "",
        mode: str = "http",
        random: Callable[[], float] | None = None,
    ) -> None:
        """@param random: p2c's random source (default: seeded with 0)."""
        self.reactor = MemoryReactorClock()
        self.config = config(backends, extra, backend_extra, mode)
        self.registry = Registry.from_config(
            self.config, self.reactor, random or Random(0).random
        )
        self.records: list[dict[str, Any]] = []
        self.observed: list[tuple[str, int]] = []
        self.seconds: list[float] = []
        self.proxy: HTTPProxy | TCPProxy
        self.factory: Factory
        if mode == "tcp":
            self.proxy = TCPProxy.from_config(
                self.config, self.registry, self.reactor, self.reactor, self._observe
            )
            self.factory = TCPProxyFactory(self.proxy)
        else:
            self.proxy = HTTPProxy.from_config(
                self.config,
                self.registry,
                self.reactor,
                self.reactor,
                self.records.append,
                self._observe,
            )
            self.factory = front_end(
                self.proxy, pages.notFound(), self.config.client, self.reactor
            )

    def _observe(self, backend: Any, status: int, seconds: float) -> None:
        self.observed.append((backend.name, status))
        self.seconds.append(seconds)

    def client(self, peer: str = "192.0.2.7") -> Client:
        return Client(self.factory, peer)

    def connects(self) -> list[tuple[str, int, float]]:
        """The pending backend connection attempts: host, port, timeout."""
        return [(c[0], c[1], c[3]) for c in self.reactor.tcpClients]

    def pending_connects(self) -> list[tuple[str, int]]:
        return [(host, port) for host, port, _ in self.connects()]

    def accept(self, index: int = 0) -> Backend:
        """Complete a pending backend connection attempt (the oldest by default)."""
        factory = self.reactor.tcpClients.pop(index)[2]
        self.reactor.connectors.pop(index)
        proto = factory.buildProtocol(None)
        transport = FakeTCP(host=("127.0.0.1", 50000), peer=("127.0.0.1", 9001))
        transport.protocol = proto
        proto.makeConnection(transport)
        return Backend(proto, transport)

    def refuse(self, index: int = 0) -> None:
        """Fail a pending backend connection attempt (the oldest by default)."""
        factory = self.reactor.tcpClients.pop(index)[2]
        self.reactor.connectors.pop(index)
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def active(self) -> list[int]:
        return [b.active for b in self.registry.backends]

    def failures(self) -> list[int]:
        return [b.failures for b in self.registry.backends]


def registry_of(
    backends: Iterable[BackendConfig],
    clock: IReactorTime,
    algorithm: str = "least_conn",
    outlier: OutlierConfig | None = None,
    random: Callable[[], float] | None = None,
    **balancing: Any,
) -> Registry:
    """
    A registry of exactly C{backends}, built as tap builds one
    (C{Registry.from_config}); C{balancing} sets L{BalancingConfig} keys;
    C{random} is p2c's source (default: seeded with 0).
    """
    config = Config(
        filename="test.ini",
        backends=tuple(backends),
        balancing=BalancingConfig(algorithm=algorithm, **balancing),
        outlier=outlier or OutlierConfig(),
    )
    return Registry.from_config(config, clock, random or Random(0).random)
