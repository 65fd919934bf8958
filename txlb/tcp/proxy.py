"""
TCP mode: every client connection is relayed to the healthy backend with
the fewest active connections, and counts on it until the relay ends.

The client is paused from the moment it connects until a backend
connection is up, so nothing piles up meanwhile.  A backend that refuses,
fails or does not connect within C{connect_timeout} is counted as failed
and the next one is tried (at most C{retries} more), never one already
tried for this client.  Once connected, an optional PROXY protocol header
goes first, then L{txlb.tunnel.Relay} carries the bytes both ways.

When every backend the client may use is at its C{max_connections}, the
client waits (still paused) in the registry's queue; it is closed if no
backend frees up within C{queue_timeout} or the queue is full.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import NotConnectingError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from txlb.config import Config
from txlb.core.registry import Backend, Lease, Registry, Waiter
from txlb.net.admission import ClientLimit
from txlb.net.tunnel import Relay, Side
from txlb.tcp import proxyproto

__all__ = ["TCPProxy", "TCPProxyFactory"]


class TCPProxy:
    """
    What every TCP-mode connection shares: the registry, the reactor, the
    timeouts and each backend's PROXY protocol setting.
    """

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        reactor: IReactorTCP,
        clock: IReactorTime,
        config: Config,
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
        self.connect_timeout = config.connect_timeout
        self.idle_timeout = config.idle_timeout
        self.retries = config.retries
        self.limit = ClientLimit(config.max_clients, clock)
        # Open client connections, for a graceful shutdown.
        self.connections: set[_Client] = set()
        by_name = {b.name: b.proxy_protocol for b in config.backends}
        self.proxy_protocol: dict[Backend, str] = {
            b: by_name.get(b.name, "none") for b in registry.backends
        }


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
            return _Refuse()
        return _Client(self.proxy)


class _Refuse(Protocol):
    """Closes a connection over C{max_clients} as soon as it is accepted."""

    def connectionMade(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


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
        self.attempt: _Attempt | None = None
        self.early: list[bytes] = []
        self.started = 0.0

    def connectionMade(self) -> None:
        self.proxy.connections.add(self)
        # Nothing is read from the client until it has somewhere to go.
        self.transport.pauseProducing()  # type: ignore[union-attr]
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self._pick()

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
            attempt.abandon()
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.cancel()
        self._release(failed=False)

    # --- choosing and connecting --------------------------------------------------

    def _pick(self) -> None:
        registry = self.proxy.registry
        lease = registry.acquire(self.tried)
        if lease is not None:
            self._connect(lease)
            return
        if registry.full(self.tried):
            self.waiter = registry.wait(self.tried, self._leased, self._queue_timed_out)
            if self.waiter is not None:
                return
            why = "every backend is at max_connections and the queue is full"
        else:
            why = "every backend tried failed" if self.tried else "none available"
        self._give_up(why)

    def _leased(self, lease: Lease) -> None:
        """A backend freed up while the client waited in the queue."""
        self.waiter = None
        self._connect(lease)

    def _queue_timed_out(self) -> None:
        self.waiter = None
        timeout = self.proxy.registry.queue_timeout
        self._give_up(f"no backend below max_connections within {timeout:g}s")

    def _give_up(self, why: str) -> None:
        self.log.warn(
            "no backend for client {client}: {why}", client=_peer(self), why=why
        )
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _connect(self, lease: Lease) -> None:
        proxy = self.proxy
        self.lease = lease
        backend = lease.backend
        self.tried.append(backend)
        self.started = proxy.clock.seconds()
        attempt = _Attempt(self, backend)
        self.attempt = attempt
        connector = proxy.reactor.connectTCP(
            backend.address.host,
            backend.address.port,
            attempt,
            # A backstop: the attempt's own timer (on the injected clock)
            # normally ends it first.
            timeout=proxy.connect_timeout + 1,
        )
        attempt.start(connector, proxy.clock, proxy.connect_timeout)

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
        version = proxy.proxy_protocol.get(lease.backend, "none")
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
        # No log event per connection: twistd would write every one.
        self._release(failed=False)

    def _release(self, failed: bool) -> None:
        """Give the lease back, once."""
        lease, self.lease = self.lease, None
        if lease is not None and lease.release(failed=failed) and failed:
            self._observe(lease.backend, 502)

    def _observe(self, backend: Backend, status: int) -> None:
        observe = self.proxy.observe
        if observe is not None:
            observe(backend, status, self.proxy.clock.seconds() - self.started)


class _BackendSide(Side):
    """The connection to the backend; tells its attempt when it is up."""

    def __init__(self, attempt: _Attempt) -> None:
        self.attempt = attempt

    def connectionMade(self) -> None:
        # Paused until the relay starts.
        self.transport.pauseProducing()  # type: ignore[union-attr]
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.attempt.made(self)


class _Attempt(ClientFactory):
    """
    One connection attempt to one backend for one client, with its own
    timeout.  Whatever happens, the client hears of it at most once; a
    connection that arrives after the client stopped waiting is dropped.
    """

    noisy = False

    def __init__(self, client: _Client, backend: Backend) -> None:
        self.client: _Client | None = client
        self.backend = backend
        self.connector: IConnector | None = None
        self.timer: IDelayedCall | None = None

    def start(self, connector: IConnector, clock: IReactorTime, timeout: float) -> None:
        self.connector = connector
        if self.client is not None:
            self.timer = clock.callLater(timeout, self._timed_out, timeout)

    def buildProtocol(self, addr: IAddress | None) -> _BackendSide:
        return _BackendSide(self)

    def made(self, side: _BackendSide) -> None:
        client = self._finish()
        if client is None:
            side.transport.abortConnection()  # type: ignore[union-attr]
        else:
            client.backend_connected(side)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        client = self._finish()
        if client is not None:
            client.attempt_failed(reason.getErrorMessage())

    def abandon(self) -> None:
        """The client left: stop connecting (a late connection is dropped)."""
        self._finish()
        self._stop_connecting()

    def _timed_out(self, timeout: float) -> None:
        self.timer = None
        client = self._finish()
        self._stop_connecting()
        if client is not None:
            client.attempt_failed(f"no connection within {timeout:g}s")

    def _finish(self) -> _Client | None:
        client, self.client = self.client, None
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        return client

    def _stop_connecting(self) -> None:
        connector, self.connector = self.connector, None
        if connector is not None:
            try:
                connector.stopConnecting()
            except NotConnectingError:
                pass


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
