"""
TCP mode: every client connection is relayed to the healthy backend with
the fewest active connections, and counts on it until the relay ends.

The client is paused from the moment it connects until a backend
connection is up, so nothing piles up meanwhile.  A backend that refuses,
fails or does not connect within C{connect_timeout} is counted as failed
and the next one is tried (at most C{retries} more), never one already
tried for this client.  Once connected, the backend's PROXY protocol header
(its C{proxy_protocol}) goes first, then L{txlb.net.tunnel.Relay} carries
the bytes both ways.

When every backend the client may use is at its C{max_connections}, the
client waits (still paused) in the registry's queue; it is closed if no
backend frees up within C{queue_timeout} or the queue is full.

With C{algorithm = hash} the key is the client's address (C{hash_key =
client_ip}, the only key TCP mode has): a client keeps its backend while
that backend is in rotation and within the bound.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import (
    IAddress,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txlb.config import ClientConfig, Config, ProxyConfig
from txlb.core.backend import Backend
from txlb.core.listeners import BackendListener, IBackendListener
from txlb.core.queue import Refusal, Waiter
from txlb.core.registry import Lease, Registry
from txlb.net.admission import ClientLimit, Refuse
from txlb.net.connect import ConnectAttempt
from txlb.net.tunnel import Relay, Side
from txlb.tcp import proxyproto

__all__ = ["TCPProxy", "TCPProxyFactory"]


@implementer(IBackendListener)
class TCPProxy(BackendListener):
    """
    What every TCP-mode connection shares: registry, reactor, timeouts.  As
    a registry listener it closes the connections still on a backend that
    is dropped (its drain timed out).
    """

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        reactor: IReactorTCP,
        clock: IReactorTime,
        settings: ProxyConfig,
        limits: ClientConfig,
        observe: Callable[[Backend, int, float], None] | None = None,
    ) -> None:
        """
        @param observe: called with (backend, status, seconds) for each
            connection attempt: 200 and the time it took to connect, or 502
            and the time until it failed.  In TCP mode the stats' request
            rate is thus the connection rate and their latency the connect
            time.
        """
        self.registry = registry
        self.reactor = reactor
        self.clock = clock
        self.observe = observe
        self.connect_timeout = settings.connect_timeout
        self.idle_timeout = settings.idle_timeout
        self.retries = settings.retries
        self.limit = ClientLimit(limits.max_clients, clock)
        self.rejected = 0  # nothing is parsed in TCP mode, so nothing rejected
        # With algorithm = hash, each connection is keyed by its client's address.
        self.client_type: type[_Client] = _Client
        # Open client connections, for a graceful shutdown.
        self.connections: set[_Client] = set()
        registry.subscribe(self)

    def backend_removed(self, backend: Backend) -> None:
        if not backend.active:
            return
        for client in list(self.connections):
            lease = client.lease
            if lease is None or lease.backend is not backend:
                continue
            if client.relay is not None:
                client.relay.abort("backend removed")
            elif client.transport is not None:
                client.transport.abortConnection()  # type: ignore[attr-defined]

    @classmethod
    def from_config(
        cls,
        config: Config,
        registry: Registry,
        reactor: IReactorTCP,
        clock: IReactorTime,
        observe: Callable[[Backend, int, float], None] | None = None,
    ) -> TCPProxy:
        proxy = cls(registry, reactor, clock, config.proxy, config.client, observe)
        if config.balancing.algorithm == "hash":
            proxy.client_type = _KeyedClient
        return proxy


class TCPProxyFactory(Factory):
    """
    Builds a L{_Client} for each accepted connection, or closes one over
    C{max_clients} at once (HTTP mode answers it a 503).
    """

    noisy = False

    def __init__(self, proxy: TCPProxy) -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        proxy = self.proxy
        if not proxy.limit.admit(proxy.connections):
            return Refuse()
        return proxy.client_type(proxy)


class _Client(Side):
    """
    The accepted client connection: paused while a backend is chosen and
    connected, then one side of a relay.
    """

    log = Logger()

    def __init__(self, proxy: TCPProxy) -> None:
        self.proxy = proxy
        self.tried: list[Backend] = []
        self.lease: Lease | None = None
        self.waiter: Waiter | None = None
        self.attempt: ConnectAttempt | None = None
        self.early: list[bytes] = []
        self.started = 0.0

    def connectionMade(self) -> None:
        self.proxy.connections.add(self)
        # Nothing is read from the client until it has somewhere to go.
        self.transport.pauseProducing()  # type: ignore[union-attr]
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self._pick()

    def settle(self) -> bool:
        """A shutdown lets a TCP-mode connection run until it ends."""
        return False

    # --- before the relay: events while connecting ------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.relay is None:
            # A transport may deliver what it had read before the pause took
            # effect: at most one read, kept for the backend.
            self.early.append(data)
        else:
            self.relay.received(self, data)

    def readConnectionLost(self) -> None:
        if self.relay is None:
            # Its request may be complete already: pass the end on after
            # connecting (see Relay.join).
            self.reading = False
        else:
            self.relay.read_ended(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.proxy.connections.discard(self)
        if self.relay is not None:
            self.relay.lost(self, reason)
            return
        if self.gone:
            return
        self.gone = True
        self.reading = False
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            attempt.abandon(stop=True)
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.cancel()
        self._release(failed=False)

    # --- choosing and connecting (LeaseClient) ------------------------------------

    def _pick(self) -> None:
        self.waiter = self.proxy.registry.queue.lease_or_wait(self, self.tried)

    def refused(self, refusal: Refusal) -> None:
        self.waiter = None
        self.log.warn(
            "no backend for client {client}: {why}",
            client=_peer(self),
            why=refusal.words,
        )
        self.transport.loseConnection()  # type: ignore[union-attr]

    def leased(self, lease: Lease) -> None:
        proxy = self.proxy
        self.waiter = None
        self.lease = lease
        backend = lease.backend
        self.tried.append(backend)
        self.started = proxy.clock.seconds()
        self.attempt = attempt = ConnectAttempt(
            lambda: _BackendSide(),
            self.backend_connected,
            self.attempt_failed,
            _drop,
        )
        attempt.start(
            proxy.reactor, proxy.clock, backend.address, proxy.connect_timeout
        )

    def attempt_failed(self, why: str) -> None:
        """The backend could not be reached: try the next, or give up."""
        self.attempt = None
        lease = self.lease
        assert lease is not None
        self.log.warn(
            "backend {backend} unreachable for client {client}: {why}",
            backend=lease.backend.name,
            client=_peer(self),
            why=why,
        )
        self._release(failed=True)
        if len(self.tried) <= self.proxy.retries:
            lease.backend.retries += 1
            self._pick()
        else:
            self.log.warn(
                "client {client} closed: {n} backends failed",
                client=_peer(self),
                n=len(self.tried),
            )
            self.transport.loseConnection()  # type: ignore[union-attr]

    def backend_connected(self, backend: _BackendSide) -> None:
        """The backend connection is up: greet it and start relaying."""
        self.attempt = None
        lease = self.lease
        assert lease is not None and backend.transport is not None
        proxy = self.proxy
        version = lease.backend.spec.proxy_protocol
        if version != "none":
            backend.transport.write(
                proxyproto.header(
                    version,
                    self.transport.getPeer(),  # type: ignore[union-attr]
                    self.transport.getHost(),  # type: ignore[union-attr]
                )
            )
        early, self.early = self.early, []
        for data in early:
            backend.transport.write(data)
        self._observe(lease.backend, 200)
        relay = Relay(
            proxy.clock,
            proxy.idle_timeout,
            self._ended,
            label=f"{_peer(self)} <-> {lease.backend.name}",
        )
        relay.bytes_up = sum(map(len, early))
        relay.join(self, backend)

    def _ended(self, relay: Relay, why: str) -> None:
        # No log event per connection (twistd would write every one); a
        # backend that broke the connection is a failure for passive
        # ejection, but the stats counted this connection when it began.
        lease, self.lease = self.lease, None
        if lease is not None:
            if relay.backend_failed:
                lease.release(failed=True, why=f"connection broken mid-stream ({why})")
            else:
                lease.release()

    def _release(self, failed: bool) -> None:
        """Give the lease back, once."""
        lease, self.lease = self.lease, None
        if lease is not None and lease.release(failed=failed) and failed:
            self._observe(lease.backend, 502)

    def _observe(self, backend: Backend, status: int) -> None:
        observe = self.proxy.observe
        if observe is not None:
            observe(backend, status, self.proxy.clock.seconds() - self.started)


class _KeyedClient(_Client):
    """A client whose backend follows its address (C{algorithm = hash})."""

    def _pick(self) -> None:
        address = self.transport.getPeer()  # type: ignore[union-attr]
        key = str(getattr(address, "host", "")).encode("ascii") or None
        self.waiter = self.proxy.registry.queue.lease_or_wait(self, self.tried, key)


class _BackendSide(Side):
    """The connection to the backend; tells its attempt when it is up."""

    connected_by: ConnectAttempt | None = None

    def connectionMade(self) -> None:
        # Paused until the relay starts.
        self.transport.pauseProducing()  # type: ignore[union-attr]
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        attempt, self.connected_by = self.connected_by, None
        if attempt is not None:
            attempt.made(self)


def _drop(side: Protocol) -> None:
    """A backend connection that came after its client left."""
    side.transport.abortConnection()  # type: ignore[union-attr]


def _peer(side: Side) -> str:
    transport = side.transport
    if transport is None:
        return "?"
    address = transport.getPeer()
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
