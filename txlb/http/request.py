"""
One request on a client connection, as its handler sees it.

The front end (L{txlb.http.frontend}) parses the request and hands it to a
handler: a proxy exchange (L{txlb.http.exchange}) or the stats app
(L{txlb.http.webbridge}).  What the front end tells the handler is the
L{RequestHandler} interface; what the handler reads and writes is the
L{ClientRequest}: the request's head, its body's flow, and the response,
framed here (C{Content-Length} or chunked, C{Connection}), whether it
streams from a backend or is one of txlb's own plain answers
(L{ClientRequest.reply}).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from txlb.config import ClientConfig
from txlb.http import wire
from txlb.http.headers import TrustedProxies, connection_tokens, request_head

__all__ = [
    "Channel",
    "ClientRequest",
    "RequestHandler",
    "ResponseFlow",
    "backend_head",
]

_EMPTY: frozenset[bytes] = frozenset()


class Channel(Protocol):
    """What a request needs of its client connection (L{txlb.http.frontend})."""

    transport: Any
    peer: str
    local_host: str
    secure: bool
    closing: bool

    def send(self, data: bytes) -> None: ...

    def abort(self) -> None: ...

    def pause(self, reason: str) -> None: ...

    def resume(self, reason: str) -> None: ...

    def set_response_producer(self, producer: IPushProducer | None) -> None: ...

    def response_done(self, request: ClientRequest, close: bool) -> None: ...

    def take_over(self) -> tuple[Any, bytes]: ...


class RequestHandler(Protocol):
    """
    What the front end tells whoever answers a request, each at most once
    and never after the handler's response is done.

    @ivar waited_for: whether a graceful shutdown waits for its response
        (a proxied request), or closes the connection at once (the stats
        app, whose event stream may never end).
    """

    waited_for: bool

    def client_body(self, data: bytes) -> None:
        """A piece of the request body arrived."""

    def client_body_done(self) -> None:
        """The whole request body arrived; the request can now be answered."""

    def client_failed(self) -> None:
        """
        The request broke off (an invalid or late body): it cannot be
        completed; the front end answers the client itself.
        """

    def client_lost(self) -> None:
        """The client's connection closed."""


class ClientRequest:
    """
    One request on a client connection and its response: what a handler
    (a proxy exchange or the stats app) reads and writes.
    """

    __slots__ = (
        "_bodiless",
        "_chunked",
        "_close",
        "_head",
        "_started",
        "body",
        "body_length",
        "body_received",
        "channel",
        "complete",
        "connection",
        "expect_continue",
        "handler",
        "head_bytes",
        "headers",
        "host",
        "keep_alive",
        "method",
        "upgrade",
        "uri",
        "version",
    )

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.method = b""
        self.uri = b""
        self.version = b"HTTP/1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.host = b""
        self.keep_alive = True
        self.body_length: int | None = 0
        # The Connection and Upgrade headers' values, as sent.
        self.connection: list[bytes] = []
        self.upgrade = b""
        # Expect: 100-continue, answered here when the body is wanted.
        self.expect_continue = False
        self.body_received = 0
        self.head_bytes = 0
        # Body pieces that arrived before a handler took the request.
        self.body: list[bytes] = []
        self.complete = False
        self.handler: RequestHandler | None = None
        self._head = b""
        self._started = False
        self._chunked = False
        self._bodiless = False
        self._close = False

    # --- what the client sent -----------------------------------------------------

    @property
    def peer(self) -> str:
        """The client's address (the connection's peer)."""
        return self.channel.peer

    @property
    def local_host(self) -> str:
        """The address the client connected to."""
        return self.channel.local_host

    @property
    def secure(self) -> bool:
        return self.channel.secure

    def value(self, lower_name: bytes) -> bytes | None:
        """The first value of a header, by its lower-cased name."""
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None

    def values(self, lower_name: bytes) -> list[bytes]:
        """Every value of a header, by its lower-cased name."""
        return [v for n, v in self.headers if n.lower() == lower_name]

    # --- flow of the request body -------------------------------------------------

    def pause_body(self) -> None:
        """Stop reading the client (its body waits for a backend)."""
        self.channel.pause("body")

    def resume_body(self) -> None:
        self.channel.resume("body")

    def upload_producer(self) -> IPushProducer:
        """The client as the producer of a backend connection's writes."""
        return _Pauser(self.channel, "upload")

    # --- the response -------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the response has begun (its head may still be held)."""
        return self._started

    def respond(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length_known: bool,
    ) -> None:
        """
        Begin the response.  The head is held until the first body bytes
        (or the end), so a small response leaves in one write.

        @param headers: end-to-end headers; framing and C{Connection} are
            added here.
        @param length_known: whether C{headers} holds a C{Content-Length}.
        """
        self._started = True
        channel = self.channel
        close = not self.keep_alive or channel.closing
        bodiless = self.method == b"HEAD" or status < 200 or status in (204, 304)
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for name, value in headers:
            parts += [name, b": ", value, b"\r\n"]
        if not bodiless and not length_known:
            if self.version == b"HTTP/1.1":
                self._chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                close = True  # the end of the body is the end of the connection
        if close:
            parts.append(b"Connection: close\r\n\r\n")
        elif self.version == b"HTTP/1.0":
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self._close = close
        self._bodiless = bodiless
        self._head = b"".join(parts)

    def write(self, data: bytes) -> None:
        if self._bodiless or not data:
            return
        if self._chunked:
            data = wire.chunk(data)
        head = self._head
        if head:
            self._head = b""
            data = head + data
        self.channel.send(data)

    def finish(self) -> None:
        """The response is complete."""
        tail = wire.LAST_CHUNK if self._chunked else b""
        head, self._head = self._head, b""
        if head or tail:
            self.channel.send(head + tail)
        self.channel.response_done(self, self._close)

    def reply(self, status: int, message: bytes, retry_after: bytes = b"") -> None:
        """
        Answer with one of txlb's own plain-text responses (an error, a
        refusal), whole, and end the response.
        """
        self._started = True
        channel = self.channel
        channel.set_response_producer(None)
        close = not self.keep_alive or channel.closing
        if close:
            connection = b"close"
        else:
            connection = b"keep-alive" if self.version == b"HTTP/1.0" else b""
        channel.send(
            wire.plain(
                status,
                message,
                connection=connection,
                retry_after=retry_after,
                head_only=self.method == b"HEAD",
            )
        )
        channel.response_done(self, close)

    def abort(self) -> None:
        """Drop the connection: the response cannot be completed."""
        self.channel.abort()

    def send_response_producer(self, producer: IPushProducer | None) -> None:
        """
        Make C{producer} (the backend connection) pause while the client
        does not read, or stop that with L{None}.
        """
        self.channel.set_response_producer(producer)

    def take_over(self) -> tuple[Any, bytes]:
        """
        Hand the connection to a tunnel (a protocol switch): no more
        parsing or timeouts here.

        @return: the transport and the client's bytes already read past
            the request head.
        """
        return self.channel.take_over()


@implementer(IPushProducer)
class _Pauser:
    """One reason for the client connection to stop reading, as a producer."""

    __slots__ = ("channel", "reason")

    def __init__(self, channel: Channel, reason: str) -> None:
        self.channel = channel
        self.reason = reason

    def pauseProducing(self) -> None:
        self.channel.pause(self.reason)

    def resumeProducing(self) -> None:
        self.channel.resume(self.reason)

    def stopProducing(self) -> None:
        self.channel.resume(self.reason)


class FlowChannel(Channel, Protocol):
    """What a response's flow needs of the connection besides a L{Channel}."""

    clock: IReactorTime
    limits: ClientConfig
    log: Logger


@implementer(IPushProducer)
class ResponseFlow:
    """
    Registered with the client's transport while a response streams: passes
    its back-pressure to the backend connection and disconnects a client
    that reads nothing for C{client_timeout}.
    """

    __slots__ = ("channel", "producer", "timer")

    def __init__(self, channel: FlowChannel, producer: IPushProducer) -> None:
        self.channel = channel
        self.producer = producer
        self.timer: Any = None

    def pauseProducing(self) -> None:
        self.producer.pauseProducing()
        if self.timer is None:
            channel = self.channel
            self.timer = channel.clock.callLater(
                channel.limits.client_timeout, self._stalled
            )

    def resumeProducing(self) -> None:
        self.cancel()
        self.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.cancel()

    def cancel(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _stalled(self) -> None:
        self.timer = None
        self.channel.log.info(
            "client {peer} read nothing for {seconds:g}s: disconnected",
            peer=self.channel.peer,
            seconds=self.channel.limits.client_timeout,
        )
        self.channel.abort()


def backend_head(
    request: ClientRequest, trusted: TrustedProxies | None
) -> tuple[bytes, bytes]:
    """
    The request head to send a backend for C{request}
    (L{txlb.http.headers.request_head}), and the protocol it asks to
    switch to: an C{Upgrade} (WebSocket) with C{upgrade} in C{Connection},
    no body and HTTP/1.1 is the one case where those hop-by-hop headers go
    on, so the backend can answer 101; else empty.

    @param trusted: the proxies whose forwarding headers are believed.
    """
    connection = request.connection
    peer = request.peer
    if trusted is not None and peer not in trusted:
        trusted = None
    head = request_head(
        request.method,
        request.uri,
        request.headers,
        peer.encode("ascii"),
        b"https" if request.secure else b"http",
        request.body_length,
        request.local_host.encode("ascii"),
        connection_tokens(connection) if connection else _EMPTY,
        trusted,
    )
    upgrade = request.upgrade if connection else b""
    if (
        upgrade
        and request.body_length == 0
        and b"upgrade" in connection_tokens(connection)
        and request.version == b"HTTP/1.1"
    ):
        head = head[:-2] + b"Connection: upgrade\r\nUpgrade: %s\r\n\r\n" % upgrade
        return head, upgrade
    return head, b""
