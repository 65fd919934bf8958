"""
The byte relay: two connected transports joined so that what one receives
the other writes.  TCP mode relays every client connection with it, and the
HTTP proxy hands a WebSocket (any C{Upgrade}) to it after the backend's
C{101}: one implementation for both.

  - Back-pressure: each transport is registered as the other's streaming
    producer, so a side whose write buffer passes its C{bufferSize} pauses
    reading on the other side.  Nothing is buffered here; each transport's
    own write buffer is the only buffer, and it is bounded by that pause.
  - Half-close: the end of one side's input becomes a write shutdown
    (C{loseWriteConnection}) on the other; once both directions have ended,
    both connections close.  A side that closes completely takes the other
    with it, after what was already written to it has been flushed.
  - Idle timeout: no byte in either direction for C{idle_timeout} seconds
    closes both connections (0 turns it off); if they are still not closed
    one more C{idle_timeout} later (a peer that reads nothing keeps its
    write buffer from draining), they are aborted.

L{Relay.join} starts relaying; the relay reports its end once, when both
connections are gone, to the C{on_end} it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txlb.net import fastio

__all__ = ["READ_SIZE", "Relay", "Side", "adopt", "splice"]

READ_SIZE = 256 * 1024
"""
Each relayed transport reads up to this many bytes at a time, and pauses
the other side once this many are waiting to be written (Twisted's
C{bufferSize} is both).  Large chunks are what make bulk transfer fast.
"""


@implementer(IHalfCloseableProtocol)
class Side(Protocol):
    """
    The protocol of one relayed connection: it hands every event to the
    L{Relay} it belongs to.

    @ivar relay: the relay, once joined; before that, events are the
        business of a subclass (see L{txlb.tcpproxy}).
    @ivar peer: the other side, once joined.
    @ivar reading: its input has not ended.
    @ivar gone: its connection is closed.
    @ivar feeding: its transport is registered as the producer of the
        peer's transport.
    """

    relay: Relay | None = None
    peer: Side | None = None
    reading = True
    gone = False
    feeding = False

    def dataReceived(self, data: bytes) -> None:
        relay = self.relay
        if relay is not None:
            relay.received(self, data)

    def readConnectionLost(self) -> None:
        relay = self.relay
        if relay is not None:
            relay.read_ended(self)

    def writeConnectionLost(self) -> None:
        """The write shutdown was flushed; nothing to do."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        relay = self.relay
        if relay is not None:
            relay.lost(self, reason)


def adopt(transport: Any, side: Side) -> None:
    """
    Make C{side} the protocol of a connection that another protocol
    (an HTTP channel, an HTTP client connection) has been using, so that
    from now on its events go to the relay.

    Works for TCP and UNIX transports, whose protocol is an attribute, and
    for TLS and other protocol wrappers, whose protocol is the wrapped one.
    """
    if hasattr(transport, "wrappedProtocol"):
        transport.wrappedProtocol = side
    else:
        transport.protocol = side
    side.makeConnection(transport)


def splice(
    relay: Relay,
    client: Any,
    backend: Any,
    to_client: bytes = b"",
    to_backend: bytes = b"",
) -> None:
    """
    The hand-off of two connections that spoke HTTP (a WebSocket, any
    protocol switch) to C{relay}: C{to_client} (the 101 head and what the
    backend sent after it) and C{to_backend} (what the client sent past its
    request head) are written first, then each transport's events go to a
    new L{Side} and the relay joins them.
    """
    if to_client:
        client.write(to_client)
    if to_backend:
        backend.write(to_backend)
    client_side, backend_side = Side(), Side()
    adopt(client, client_side)
    adopt(backend, backend_side)
    relay.join(client_side, backend_side)


def _set_buffer(transport: ITransport, size: int) -> None:
    if hasattr(transport, "bufferSize"):
        transport.bufferSize = size


def _stop_feeding(side: Side) -> None:
    """Unregister C{side}'s transport as the producer of its peer's."""
    if side.feeding:
        side.feeding = False
        peer = side.peer
        assert peer is not None and peer.transport is not None
        peer.transport.unregisterProducer()  # type: ignore[attr-defined]


class Relay:
    """
    Two joined connections, C{client} and C{backend}.

    @ivar bytes_up: bytes relayed from the client to the backend.
    @ivar bytes_down: bytes relayed from the backend to the client.
    @ivar backend_failed: the backend's connection broke (reset, or an
        error) while the client's was still open: a failure of the backend,
        as HAProxy's C{observe layer4} counts it.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        idle_timeout: float,
        on_end: Callable[[Relay, str], None],
        label: str = "",
        read_size: int = READ_SIZE,
    ) -> None:
        """
        @param idle_timeout: seconds without a byte either way before both
            connections are closed; 0 for never.
        @param on_end: called once with this relay and why it ended, when
            both connections are closed.
        @param label: names the relay in log events.
        @param read_size: see L{READ_SIZE}.
        """
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._on_end: Callable[[Relay, str], None] | None = on_end
        self._read_size = read_size
        self.label = label
        self.client: Side | None = None
        self.backend: Side | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self.backend_failed = False
        self._timer: IDelayedCall | None = None
        self._last = 0.0
        self._why = ""
        self._aborting = False
        self._closing = False

    def join(self, client: Side, backend: Side) -> None:
        """
        Start relaying between two connected sides.

        Their transports may be paused (the client is, while its backend
        connects); they are resumed here.  A side whose input had already
        ended (C{reading} false) has that passed on at once.
        """
        assert not client.gone and not backend.gone
        self.client, self.backend = client, backend
        client.peer, backend.peer = backend, client
        client.relay = backend.relay = self
        ct, bt = client.transport, backend.transport
        assert ct is not None and bt is not None
        _set_buffer(ct, self._read_size)
        _set_buffer(bt, self._read_size)
        if self._idle_timeout > 0:
            self._last = self._clock.seconds()
            self._timer = self._clock.callLater(self._idle_timeout, self._idle)
        ended = []
        for side in (client, backend):
            if side.reading:
                side.peer.transport.registerProducer(  # type: ignore[union-attr]
                    side.transport, True
                )
                side.feeding = True
            else:
                side.reading = True
                ended.append(side)
        for side in ended:
            self.read_ended(side)
        for side in (client, backend):
            if side.reading:
                side.transport.resumeProducing()  # type: ignore[union-attr]

    def abort(self, why: str) -> None:
        """Drop both connections at once."""
        if not self._why:
            self._why = why
        self._aborting = True
        for side in (self.client, self.backend):
            if side is not None and not side.gone and side.transport is not None:
                side.transport.abortConnection()  # type: ignore[attr-defined]

    # --- events from the sides ---------------------------------------------------

    def received(self, side: Side, data: bytes) -> None:
        if side is self.client:
            self.bytes_up += len(data)
        else:
            self.bytes_down += len(data)
        if self._timer is not None:
            self._last = self._clock.seconds()
        fastio.write(side.peer.transport, data)  # type: ignore[union-attr]

    def read_ended(self, side: Side) -> None:
        """
        A side's input ended: shut the other side's output down once what
        is waiting there is written; close both when both inputs ended.
        """
        if not side.reading or side.gone:
            return
        side.reading = False
        # Its transport produces nothing more, and must not be resumed.
        _stop_feeding(side)
        peer = side.peer
        assert peer is not None
        if peer.gone:
            return
        pt = peer.transport
        if peer.reading:
            lose_write = getattr(pt, "loseWriteConnection", None)
            if lose_write is not None:
                lose_write()
                return
            self._why = self._why or "client or backend closed"
        else:
            self._why = self._why or "both sides closed"
        side.transport.loseConnection()  # type: ignore[union-attr]
        pt.loseConnection()  # type: ignore[union-attr]

    def lost(self, side: Side, reason: Failure) -> None:
        """
        A side's connection closed: close the other after flushing what was
        written to it; report the end when both are gone.
        """
        if side.gone:
            return
        side.gone = True
        side.reading = False
        _stop_feeding(side)
        if (
            side is self.backend
            and not self._aborting
            and not self.client.gone  # type: ignore[union-attr]
            and not reason.check(ConnectionDone)
        ):
            self.backend_failed = True
        if not self._why:
            who = "client" if side is self.client else "backend"
            self._why = f"{who} closed" + _why(reason)
        peer = side.peer
        assert peer is not None
        if not peer.gone:
            if self._aborting:
                peer.transport.abortConnection()  # type: ignore[union-attr]
            else:
                peer.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._end()

    # --- internals --------------------------------------------------------------------

    def _idle(self) -> None:
        self._timer = None
        if self._closing:
            # Closed an idle period ago and still not gone: stop waiting.
            self.abort(self._why)
            return
        left = self._last + self._idle_timeout - self._clock.seconds()
        if left > 0:
            self._timer = self._clock.callLater(left, self._idle)
            return
        self.log.info(
            "{label}: idle for {seconds:g}s, closing",
            label=self.label,
            seconds=self._idle_timeout,
        )
        self._closing = True
        self._why = self._why or f"idle for {self._idle_timeout:g}s"
        self._timer = self._clock.callLater(self._idle_timeout, self._idle)
        for side in (self.client, self.backend):
            if side is not None and not side.gone:
                side.transport.loseConnection()  # type: ignore[union-attr]

    def _end(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(self, self._why)


def _why(reason: Failure) -> str:
    if reason.check(type(connectionDone.value)):
        return ""
    return f": {reason.getErrorMessage()}"
