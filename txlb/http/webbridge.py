"""
The stats app on the proxy's own port: a request the front end parsed is
answered by a twisted.web L{Site} (the Klein app) as if a twisted.web
channel had read it.

L{StatsCall} is the face of a channel that twisted.web's L{Request} uses:
addresses, writes, producers and C{requestDone}.  Only paths reserved for
the stats app come here (C{/api/}, C{/dashboard}, C{/metrics},
C{/healthz}), and their bodies are read whole first (admin JSON; at most
1 MiB).
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.server import Site

from txlb.http import wire
from txlb.http.request import ClientRequest

__all__ = ["StatsCall"]

_NO_BODY = frozenset({204, 304})
_BODY_LIMIT = 1 << 20


class StatsCall:
    """One stats-app request, answered by twisted.web on the client's connection."""

    waited_for = False  # at shutdown: an event stream may never end

    def __init__(self, request: ClientRequest, site: Site) -> None:
        self.request = request
        self.site = site
        self.factory = None  # no twisted.web access log: txlb keeps its own
        channel = request.channel
        self.transport: Any = channel.transport
        self._channel = channel
        self._web: http.Request | None = None
        self._close = False
        self._done = False

    # --- driven by the front end --------------------------------------------------

    def start(self) -> None:
        """The request is complete: let twisted.web answer it."""
        request = self.request
        web = self.site.requestFactory(self)
        self._web = web
        headers = web.requestHeaders
        for name, value in request.headers:
            headers.addRawHeader(name, value)
        body = b"".join(request.body)
        web.gotLength(len(body))
        if body:
            web.handleContentChunk(body)
        web.requestReceived(request.method, request.uri, request.version)

    def client_body(self, data: bytes) -> None:
        request = self.request
        if request.body_received > _BODY_LIMIT:
            self._done = True
            request.abort()
            return
        request.body.append(data)

    def client_body_done(self) -> None:
        self.start()

    def client_failed(self) -> None:
        self._done = True

    def client_lost(self) -> None:
        web = self._web
        if web is not None and not self._done:
            self._done = True
            web.connectionLost(Failure(ConnectionError("client went away")))

    # --- what twisted.web's Request asks of its channel ---------------------------

    def getPeer(self) -> Any:
        return self.transport.getPeer()

    def getHost(self) -> Any:
        return self.transport.getHost()

    def isSecure(self) -> bool:
        return self._channel.secure

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Any
    ) -> None:
        request = self.request
        status = int(code)
        has_length = headers.hasHeader(b"content-length")
        chunked = headers.hasHeader(b"transfer-encoding")
        bodiless = request.method == b"HEAD" or status < 200 or status in _NO_BODY
        close = (
            not request.keep_alive
            or self._channel.closing
            or not (has_length or chunked or bodiless)
        )
        self._close = close
        parts = [b"HTTP/1.1 ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                parts += [name, b": ", value, b"\r\n"]
        if close:
            parts.append(b"Connection: close\r\n")
        elif request.version == b"HTTP/1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        self._channel.send(b"".join(parts))

    def write(self, data: bytes) -> None:
        self._channel.send(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self._channel.send(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()

    def requestDone(self, web: http.Request) -> None:
        if self._done:
            return
        self._done = True
        self.request.channel.response_done(self.request, self._close)

    def loseConnection(self) -> None:
        self.transport.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        self._channel.send(wire.plain(400, "bad request"))
        self.transport.loseConnection()
