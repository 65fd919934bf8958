"""
A request body's way to its backend: the L{Upload}.

The exchange starts as soon as a request's head is in; its body is held
until a backend connection is up, read on up to L{HOLD} bytes meanwhile so
that a client that leaves (queued or connecting) is noticed at once.  Once
attached, the body streams, chunk-framed when its length is unknown, with
the client as the producer of the backend's writes.
"""

from __future__ import annotations

from txlb.http import wire
from txlb.http.request import ClientRequest
from txlb.http.upstream import BackendConnection

__all__ = ["HOLD", "Upload"]

HOLD = 64 * 1024
"""
Bytes of a request body read while it waits for a backend (in the queue, or
connecting) before its client is paused.  While it is read, a client that
disconnects is noticed at once; past it, the end of its connection waits
unread behind the rest of its body until a backend takes the request.
"""


class Upload:
    """
    One request body, held and then sent on.

    @ivar complete: the client sent all of it.
    """

    __slots__ = (
        "chunked",
        "complete",
        "conn",
        "dropping",
        "held",
        "held_bytes",
        "request",
    )

    def __init__(self, request: ClientRequest) -> None:
        """Take over what arrived of C{request}'s body with its head."""
        self.request = request
        self.chunked = request.body_length is None
        self.conn: BackendConnection | None = None
        self.complete = False
        self.dropping = False
        self.held = request.body
        self.held_bytes = sum(map(len, self.held))
        request.body = []
        if not request.complete and self.held_bytes >= HOLD:
            request.pause_body()

    def received(self, data: bytes) -> None:
        """More of the body arrived: hold it, or send it on (or drop it)."""
        if self.dropping:
            return
        conn = self.conn
        if conn is None:
            # Past HOLD (and one read) the client waits unread.
            self.held.append(data)
            self.held_bytes += len(data)
            if self.held_bytes >= HOLD:
                self.request.pause_body()
        else:
            conn.send(wire.chunk(data) if self.chunked else data)

    def attach(self, conn: BackendConnection) -> None:
        """
        The backend connection is up (its request head sent): send what
        was held and let the client stream the rest, if there is more.
        """
        self.conn = conn
        held, self.held = self.held, []
        chunked = self.chunked
        for data in held:
            conn.send(wire.chunk(data) if chunked else data)
        if not self.complete:
            request = self.request
            conn.transport.registerProducer(request.upload_producer(), True)  # type: ignore[union-attr]
            request.resume_body()

    def drop(self) -> None:
        """
        The request is answered before its body is in (the backend failed,
        or none could take it): read the rest and drop it, so the answer
        can go out once the client has sent it all.
        """
        self.dropping = True
        self.held = []
        self.conn = None
        self.request.resume_body()

    def end(self) -> None:
        """The body is all sent: close its framing, stop streaming."""
        conn = self.conn
        assert conn is not None
        if self.chunked:
            conn.send(wire.LAST_CHUNK)
        if conn.transport.producer is not None:  # type: ignore[union-attr]
            conn.transport.unregisterProducer()  # type: ignore[union-attr]
