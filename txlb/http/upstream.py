"""
A lean HTTP/1.1 client for talking to backends: one idle-connection pool per
backend and the C{httptools} (llhttp) response parser.

This replaces C{twisted.web.client.Agent} on the per-request path: no
endpoint objects, no Deferred chains, a C parser.  A connection carries one
exchange at a time; its owner (an L{UpstreamSink}) is told of the response
head, each body piece, the end, a failure or a timeout, exactly once.

The connection owns the exchange's C{backend_timeout}: armed once the
request is sent (L{BackendConnection.arm}), moved by every piece of the
answer, and kept on one timer for the connection's successive requests
(L{txlb.net.deadline}), so no timer is made or cancelled per request.
"""

from __future__ import annotations

import weakref
from typing import Protocol as TypingProtocol

import httptools
from twisted.internet.interfaces import (
    IPushProducer,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from txlb.config import Address
from txlb.net import fastio
from txlb.net.connect import ConnectAttempt
from txlb.net.deadline import Deadline

__all__ = ["BackendConnection", "BackendPool", "UpstreamSink"]

# A response head that names its framing (cheap test by length first).
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_FRAMING_LENGTHS = frozenset(len(name) for name in _FRAMING)


class UpstreamSink(TypingProtocol):
    """What a L{BackendConnection} reports to while it carries an exchange."""

    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """The response's status line and headers arrived (never 1xx)."""

    def upstream_body(self, data: bytes) -> None:
        """A piece of the response body arrived."""

    def upstream_done(self) -> None:
        """The response is complete."""

    def upstream_failed(self, why: str, response_started: bool) -> None:
        """
        The exchange failed: the connection closed, reset or sent garbage.

        @param response_started: whether any byte of the response had arrived.
        """

    def upstream_upgraded(
        self, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """
        The backend answered C{101 Switching Protocols}: the connection now
        carries another protocol and is the sink's to keep; it is no longer
        this connection's or the pool's.

        @param rest: bytes of the new protocol that came after the head.
        """

    def upstream_timed_out(self) -> None:
        """
        No piece of the answer came within the C{timeout} given to
        L{BackendConnection.arm}.  The connection is still the sink's (it
        is no longer usable: abort it).
        """


@implementer(IPushProducer)
class BackendConnection(Protocol):
    """
    One keep-alive connection to a backend.

    @ivar reused: this connection carried an earlier exchange, so a failure
        before any response byte may just be the backend closing an idle
        connection (safe to retry on a fresh one).
    """

    sink: UpstreamSink | None = None
    reused = False
    connected_by: ConnectAttempt | None = None

    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool
        self._deadline = Deadline(pool.clock, self._timed_out)
        self._timeout = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._informational = False
        self._head_only = False
        self._has_length = False
        self._framed = False  # the head being read names its framing
        self._responded = False
        self._request_sent = False
        self._switching: tuple[bytes, list[tuple[bytes, bytes]]] | None = None

    # --- called by the pool and the exchange -------------------------------

    def start(self, sink: UpstreamSink, head: bytes, head_only: bool) -> None:
        """
        Begin an exchange by sending the request head.

        @param head_only: the response has no body (a HEAD request).
        """
        self.sink = sink
        self._head_only = head_only
        self._responded = False
        self._request_sent = False
        fastio.write(self.transport, head)

    def send(self, data: bytes) -> None:
        """Send a piece of the request body."""
        fastio.write(self.transport, data)

    def request_sent(self) -> None:
        """The whole request has been sent."""
        self._request_sent = True

    def arm(self, timeout: float) -> None:
        """
        Time the answer: C{upstream_timed_out} unless a piece of it arrives
        within C{timeout} seconds, and again after each piece.
        """
        self._timeout = timeout
        self._deadline.set(timeout)

    def disarm(self) -> None:
        """Stop timing (the client does not read: the backend is not to blame)."""
        self._timeout = 0.0
        self._deadline.clear()

    def _timed_out(self) -> None:
        self._timeout = 0.0
        sink = self.sink
        if sink is not None:
            sink.upstream_timed_out()

    # --- IPushProducer: the client side pauses the backend read ---------------

    _paused = False

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self._paused = False
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once, ending the exchange without a report."""
        self.sink = None
        self.disarm()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # --- Protocol -----------------------------------------------------------

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.pool.opened(self)
        attempt, self.connected_by = self.connected_by, None
        if attempt is not None:
            attempt.made(self)

    def dataReceived(self, data: bytes) -> None:
        if self.sink is None:
            # Bytes on an idle connection: the backend is confused.
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._responded = True
        if self._timeout:
            # Each piece of the answer starts backend_timeout again.
            self._deadline.at = self.pool.clock.seconds() + self._timeout
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # llhttp stops after a 101 that names an Upgrade; what follows
            # is the new protocol's.
            self._upgraded(data[e.args[0] :])
            return
        except httptools.HttpParserError as e:
            self._fail(f"invalid response from backend: {e}")
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if self._head_only and self.sink is None:
            # A HEAD response ends with its head; llhttp would wait for the
            # body its Content-Length announces, so start a fresh parser.
            self._parser = httptools.HttpResponseParser(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.pool.lost(self)
        self._deadline.stop()
        sink = self.sink
        if sink is None:
            return
        if self._responded and not self._informational and not self._has_length:
            # A response delimited by the connection closing ended cleanly.
            self._complete(keep_alive=False)
            return
        self.sink = None
        sink.upstream_failed(
            "backend closed the connection" + _why(reason), self._responded
        )

    # --- httptools callbacks ------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(name) in _FRAMING_LENGTHS and name.lower() in _FRAMING:
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers, self._headers = self._headers, []
        reason, self._reason = self._reason, b""
        framed, self._framed = self._framed, False
        if status < 200:
            # 100 Continue and friends: not forwarded.  A 101 is kept for
            # the upgrade that llhttp reports next (see dataReceived).
            self._informational = True
            if status == 101:
                self._switching = (reason, headers)
            return
        self._informational = False
        self._has_length = self._head_only or status in (204, 304) or framed
        sink = self.sink
        if sink is None:
            return
        sink.upstream_head(status, reason, headers)
        if self._head_only and self.sink is sink:
            self._complete(keep_alive=self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.upstream_body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.sink is not None:
            self._complete(keep_alive=self._parser.should_keep_alive())

    # --- internals ----------------------------------------------------------

    def _complete(self, keep_alive: bool) -> None:
        sink, self.sink = self.sink, None
        self.disarm()
        reusable = keep_alive and self._request_sent
        assert sink is not None
        sink.upstream_done()
        if reusable and _open(self.transport):
            self.reused = True
            if self._paused:
                self.resumeProducing()
            self.pool.checkin(self)
        elif self.transport is not None:
            self.transport.loseConnection()

    def _upgraded(self, rest: bytes) -> None:
        switching, self._switching = self._switching, None
        sink, self.sink = self.sink, None
        self.disarm()
        if switching is None or sink is None:
            if sink is not None:
                sink.upstream_failed("backend switched protocols unasked", True)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        reason, headers = switching
        self.pool.upgraded(self)
        sink.upstream_upgraded(reason, headers, rest)

    def _fail(self, why: str) -> None:
        sink, self.sink = self.sink, None
        self.disarm()
        if sink is not None:
            sink.upstream_failed(why, self._responded)


def _open(transport: object) -> bool:
    return (
        transport is not None
        and bool(getattr(transport, "connected", False))
        and not getattr(transport, "disconnecting", False)
    )


def _why(reason: Failure) -> str:
    if reason.check(type(connectionDone.value)):
        return ""
    return f": {reason.getErrorMessage()}"


class ConnectWaiter(TypingProtocol):
    """Who asked the pool for a connection."""

    def upstream_ready(self, connection: BackendConnection) -> None: ...

    def upstream_unreachable(self, why: str) -> None: ...


class BackendPool:
    """
    Connections to one backend: idle ones kept for reuse (most recently used
    first, so the surplus ages out on the backend's idle timeout).
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        clock: IReactorTime,
        address: Address,
        connect_timeout: float,
        max_idle: int,
    ) -> None:
        self.address = address
        self.clock = clock
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._idle: list[BackendConnection] = []
        # Every open connection (idle or busy), and the transports of those
        # handed to a tunnel (101), for abort().
        self._open: set[BackendConnection] = set()
        self._tunnels: weakref.WeakSet[object] = weakref.WeakSet()
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    def get(self, waiter: ConnectWaiter, fresh: bool = False) -> ConnectAttempt | None:
        """
        Hand the waiter a connection: an idle one at once, or a new one when
        it connects.

        @param fresh: always open a new connection.

        @return: the pending attempt (to C{abandon()}: a connection that
            arrives then is pooled), or L{None} if the waiter was served
            already.
        """
        idle = self._idle
        while idle and not fresh:
            connection = idle.pop()
            if _open(connection.transport):
                waiter.upstream_ready(connection)
                return None
        attempt = ConnectAttempt(
            lambda: BackendConnection(self),
            waiter.upstream_ready,
            waiter.upstream_unreachable,
            self.checkin,
        )
        attempt.start(self._reactor, self.clock, self.address, self._connect_timeout)
        return attempt

    def checkin(self, connection: BackendConnection) -> None:
        """Keep a connection whose exchange ended cleanly, if there is room."""
        if self._closed or len(self._idle) >= self._max_idle:
            connection.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self._idle.append(connection)

    def opened(self, connection: BackendConnection) -> None:
        self._open.add(connection)

    def upgraded(self, connection: BackendConnection) -> None:
        """C{connection} now carries a tunnel: no longer the pool's."""
        self._open.discard(connection)
        self._tunnels.add(connection.transport)

    def lost(self, connection: BackendConnection) -> None:
        """A connection closed; forget it if it was idle."""
        self._open.discard(connection)
        try:
            self._idle.remove(connection)
        except ValueError:
            pass

    def close(self) -> None:
        """Close every idle connection and keep no more."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.transport.loseConnection()  # type: ignore[union-attr]

    def abort(self) -> None:
        """
        Close every connection at once, busy ones and tunnels too (the
        backend was dropped: see C{drain_timeout}); their exchanges fail as
        if the backend had closed them.
        """
        busy = self._open.difference(self._idle)
        self.close()
        for connection in busy:
            if connection.transport is not None:
                connection.transport.abortConnection()  # type: ignore[attr-defined]
        for transport in list(self._tunnels):
            transport.abortConnection()  # type: ignore[attr-defined]
