"""
A worker's way to the stats app, which its supervisor serves once for the
whole balancer: a request for one of the stats app's paths (C{/api/},
C{/dashboard}, C{/metrics}) that arrives at a worker is sent on to the
supervisor over a UNIX socket, and the answer streamed back (an
C{/api/events} stream included, with back-pressure).
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web import http

from txlb.http.headers import response_headers
from txlb.http.request import ClientRequest, backend_head
from txlb.http.upstream import BackendConnection, BackendPool
from txlb.net.connect import ConnectAttempt

__all__ = ["StatsForward"]


class StatsForward:
    """
    One stats app request forwarded to the supervisor: the request's
    L{txlb.http.request.RequestHandler} and the connection's sink.
    """

    log = Logger()
    waited_for = False  # at shutdown: an event stream may never end

    def __init__(self, request: ClientRequest, pool: BackendPool) -> None:
        self.request = request
        self.pool = pool
        self.attempt: ConnectAttempt | None = None
        self.conn: BackendConnection | None = None
        self.done = False

    # --- the client side ------------------------------------------------------------

    def start(self) -> None:
        """The request is whole (its body, admin JSON, is small): send it on."""
        self.attempt = self.pool.get(self)

    def client_body(self, data: bytes) -> None:
        self.request.body.append(data)

    def client_body_done(self) -> None:
        self.start()

    def client_failed(self) -> None:
        self.client_lost()

    def client_lost(self) -> None:
        self.done = True
        if self.attempt is not None:
            self.attempt.abandon()
            self.attempt = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()

    # --- the supervisor's answer ----------------------------------------------------

    def upstream_ready(self, conn: BackendConnection) -> None:
        self.attempt = None
        if self.done:
            conn.pool.checkin(conn)
            return
        self.conn = conn
        request = self.request
        head, _ = backend_head(request, None)
        conn.start(self, head + b"".join(request.body), request.method == b"HEAD")
        conn.request_sent()

    def upstream_unreachable(self, why: str) -> None:
        self.attempt = None
        self.log.warn("the supervisor's stats app is unreachable: {why}", why=why)
        if not self.done:
            self.done = True
            self.request.reply(503, b"the stats app is unavailable", b"1")

    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        out, saw_date, length_known = response_headers(headers)
        if not saw_date:
            out.append((b"Date", http.datetimeToString()))
        request = self.request
        request.respond(status, reason, out, length_known)
        if self.conn is not None:
            request.send_response_producer(self.conn)

    def upstream_body(self, data: bytes) -> None:
        self.request.write(data)

    def upstream_done(self) -> None:
        self.conn = None
        if not self.done:
            self.done = True
            self.request.finish()

    def upstream_failed(self, why: str, response_started: bool) -> None:
        self.conn = None
        if self.done:
            return
        self.done = True
        if self.request.started:
            self.request.abort()
        else:
            self.request.reply(502, b"the stats app failed")

    def upstream_timed_out(self) -> None:
        """Never armed: an event stream has no deadline."""

    def upstream_upgraded(
        self, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        self.upstream_failed("the stats app switched protocols", True)
