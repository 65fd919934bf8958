"""
One client request's trip to a backend and back: the L{Exchange}.

The exchange gets a lease (L{txlb.core.queue}), a connection from the
backend's pool (L{txlb.http.upstream}) and streams both ways with
back-pressure: a request with a body starts as soon as its head is in (its
body held meanwhile: L{txlb.http.upload}), and the exchange is the producer
of the response, so a client that does not read pauses the
backend read (and its timeout).  A failure before any answer is retried on
another backend when the request can be replayed.  An C{Upgrade} request
(WebSocket) keeps its C{Upgrade} and C{Connection} headers; after the
backend's C{101} the connections are spliced into a byte relay
(L{txlb.net.tunnel}), and the lease is held until it closes.  The lease is
released exactly once, however the exchange ends.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from txlb.core.backend import Backend
from txlb.core.queue import Refusal, Waiter
from txlb.core.registry import Lease
from txlb.http import wire
from txlb.http.headers import response_headers
from txlb.http.proxy import HTTPProxy
from txlb.http.request import ClientRequest, backend_head
from txlb.http.upgrade import hand_off
from txlb.http.upload import Upload
from txlb.http.upstream import BackendConnection
from txlb.net.connect import ConnectAttempt
from txlb.net.tunnel import Relay
from txlb.observe.accesslog import record

__all__ = ["Exchange"]

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

# How a failed exchange is described in the backend's ejection cause.
_FAILURES = {
    101: "the tunnel broke mid-stream",  # (failed only if the backend broke it)
    499: "",
    502: "bad response",
    504: "timed out",
}


@implementer(IPushProducer)
class Exchange:
    """
    One client request's trip to a backend and back: the request's
    L{txlb.http.request.RequestHandler}, the queue's
    L{txlb.core.queue.LeaseClient}, the pool's waiter and the backend
    connection's L{txlb.http.upstream.UpstreamSink}.
    """

    __slots__ = (
        "attached",
        "attempt",
        "body_length",
        "bytes_sent",
        "conn",
        "done",
        "early",
        "head",
        "lease",
        "method",
        "proxy",
        "request",
        "responded",
        "started",
        "status",
        "tried",
        "upgrade",
        "upload",
        "upstream_started",
        "waiter",
    )

    log = Logger()
    waited_for = True  # a shutdown lets the response finish

    def __init__(self, proxy: HTTPProxy, request: ClientRequest) -> None:
        self.proxy = proxy
        self.request = request
        self.lease: Lease | None = None
        self.tried: list[Backend] = []
        self.waiter: Waiter | None = None
        self.attempt: ConnectAttempt | None = None
        self.conn: BackendConnection | None = None
        self.attached = False
        self.early: list[Callable[[], None]] | None = None
        self.responded = False
        self.done = False
        self.upload: Upload | None = None
        self.status = 0
        self.bytes_sent = 0
        self.upstream_started = 0.0
        self.upgrade = b""

    # --- the client side (RequestHandler) ----------------------------------------

    def begin(self) -> None:
        """Start: build the backend's request head, then get a backend."""
        request = self.request
        proxy = self.proxy
        self.started = started = proxy.clock.seconds()
        proxy.budget.request(started)
        self.method = request.method
        self.body_length = body_length = request.body_length
        self.attached = body_length == 0
        if body_length != 0:
            self.upload = Upload(request)
        self.head, self.upgrade = backend_head(request, proxy.trusted_proxies)
        self._pick()
        if body_length != 0 and request.complete and not self.done:
            self.client_body_done()

    def client_body(self, data: bytes) -> None:
        upload = self.upload
        if upload is not None and not self.done:
            upload.received(data)

    def client_body_done(self) -> None:
        upload = self.upload
        if upload is not None:
            # (A request without a body was ended as it was sent.)
            upload.complete = True
            conn = self.conn
            if conn is not None and not self.done:
                self._body_sent(conn, upload)
        self.attached = True
        early, self.early = self.early, None
        if early:
            for step in early:
                step()

    def client_failed(self) -> None:
        """The backend must not take the broken request for complete."""
        self._abandon(400)

    def client_lost(self) -> None:
        """Free the backend connection and the lease."""
        self._abandon(499)

    def _abandon(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        waiter = self.waiter
        if waiter is not None:
            waiter.cancel()  # idempotent: nothing if it got a lease already
        if self.attempt is not None:
            self.attempt.abandon()
            self.attempt = None
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        self._end(failed=False, status=status)

    # --- choosing a backend (LeaseClient, ConnectWaiter) --------------------------

    def _pick(self) -> None:
        self.waiter = self.proxy.registry.queue.lease_or_wait(self, self.tried)

    def leased(self, lease: Lease) -> None:
        self.waiter = None
        self.lease = lease
        backend = lease.backend
        self.tried.append(backend)
        self.attempt = backend.pool.get(self)

    def refused(self, refusal: Refusal) -> None:
        self.waiter = None
        self._error(refusal.status, refusal.words.encode(), retry=refusal.retry_later)

    def upstream_ready(self, conn: BackendConnection) -> None:
        self.attempt = None
        if self.done:
            conn.pool.checkin(conn)
            return
        self.conn = conn
        self.upstream_started = self.proxy.clock.seconds()
        conn.start(self, self.head, self.method == b"HEAD")
        upload = self.upload
        if upload is None:
            conn.request_sent()
            conn.arm(self.proxy.backend_timeout)
            return
        upload.attach(conn)
        if upload.complete:
            self._body_sent(conn, upload)

    def _body_sent(self, conn: BackendConnection, upload: Upload) -> None:
        """The request body is all in: end it and time the answer."""
        upload.end()
        conn.request_sent()
        conn.arm(self.proxy.backend_timeout)

    def upstream_unreachable(self, why: str) -> None:
        self.attempt = None
        self.log.warn("backend unreachable: {why}", why=why)
        lease = self.lease
        observe = self.proxy.observe
        if observe is not None and lease is not None:
            # The attempt counts in the stats as the 502 it would have been.
            observe(lease.backend, 502, self.proxy.clock.seconds() - self.started)
        self._retry_elsewhere(
            "connection failed", b"no backend could be reached", budgeted=False
        )

    def _retry_elsewhere(self, cause: str, message: bytes, budgeted: bool) -> None:
        """
        The chosen backend failed before answering and the request can be
        replayed: count the failure and try a backend not tried yet, within
        C{retries} and, for a request that reached a backend (C{budgeted}),
        the retry budget.  A refused connection did no work anywhere, so its
        retries cannot feed a retry storm; C{retries} alone bounds them.
        """
        lease, self.lease = self.lease, None
        assert lease is not None
        lease.release(failed=True, why=cause)
        proxy = self.proxy
        why_not = proxy.why_not_retry(len(self.tried), budgeted)
        if why_not:
            self.log.warn(
                "not retrying {method} {uri}: {why}",
                method=self.method,
                uri=self.request.uri,
                why=why_not,
            )
            self._error(502, message)
            return
        lease.backend.retries += 1
        self._pick()

    # --- the backend's response (UpstreamSink) -----------------------------------

    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        if not self.attached:
            self._defer(lambda: self.upstream_head(status, reason, headers))
            return
        self.responded = True
        self.status = status
        out, saw_date, length_known = response_headers(headers)
        if not saw_date:
            out.append((b"Date", wire.http_date()))
        request = self.request
        request.respond(
            status, reason or wire.REASONS.get(status, b""), out, length_known
        )
        if self.conn is not None:
            request.send_response_producer(self)

    def upstream_body(self, data: bytes) -> None:
        if not self.attached:
            self._defer(lambda: self.upstream_body(data))
            return
        self.bytes_sent += len(data)
        self.request.write(data)

    def upstream_done(self) -> None:
        if not self.attached:
            self._defer(self.upstream_done)
            return
        if self.done:
            return
        self.done = True
        self.conn = None
        self.request.finish()
        self._end(failed=self.status >= 500, status=self.status)

    def upstream_failed(self, why: str, response_started: bool) -> None:
        conn = self.conn
        self.conn = None
        if self.done:
            return
        replayable = self.body_length == 0 and self.method in _IDEMPOTENT
        if not response_started and conn is not None and conn.reused and replayable:
            # The backend closed an idle keep-alive connection as we reused
            # it: replay on a fresh connection to the same backend.
            lease = self.lease
            assert lease is not None
            self.attempt = lease.backend.pool.get(self, fresh=True)
            return
        self.log.warn(
            "backend {backend} failed: {why}",
            backend=self.lease.backend.name if self.lease else "?",
            why=why,
        )
        if self.responded:
            self._abort_client()
        elif not response_started and replayable and self.lease is not None:
            # Reset before any answer, and nothing is lost by replaying.
            self._retry_elsewhere(
                "reset before answering", b"the backend failed", budgeted=True
            )
        else:
            self._error(502, b"the backend failed")

    def upstream_timed_out(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        if self.done:
            return
        if self.responded:
            self._abort_client()
        else:
            self._error(504, b"the backend did not answer in time")

    def upstream_upgraded(
        self, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """
        The backend switched protocols: hand both connections to a relay.
        The lease is held (the tunnel is an active connection on its
        backend) until the relay ends, and the exchange with it (status 101).
        """
        conn, self.conn = self.conn, None
        assert conn is not None and conn.transport is not None
        if self.done or not self.upgrade:
            conn.abort()
            if not self.done:
                self.log.warn(
                    "backend {backend} switched protocols unasked",
                    backend=self.lease.backend.name if self.lease else "?",
                )
                self._error(502, b"the backend failed")
            return
        self.done = self.responded = True
        self.status = 101
        proxy, lease = self.proxy, self.lease
        relay = Relay(proxy.clock, proxy.idle_timeout, self._tunnel_ended)
        if proxy.observe is not None and lease is not None:
            proxy.observe(
                lease.backend, 101, proxy.clock.seconds() - self.upstream_started
            )
        backend = lease.backend.name if lease else "?"
        hand_off(
            self.request, conn, reason, headers, rest, self.upgrade, backend, relay
        )

    def _tunnel_ended(self, relay: Relay, why: str) -> None:
        self.bytes_sent = relay.bytes_down
        self._end(failed=relay.backend_failed, status=101)

    # --- endings -----------------------------------------------------------------

    def _defer(self, step: Callable[[], None]) -> None:
        """
        Keep a response step for when the request is complete; the backend
        is paused meanwhile so nothing piles up.
        """
        if self.early is None:
            self.early = []
            if self.conn is not None:
                self.conn.pauseProducing()
        self.early.append(step)

    def _error(self, code: int, message: bytes, retry: bool = False) -> None:
        if self.done:
            return
        request = self.request
        if not self.attached:
            # Answered once the rest of the body is in (and dropped).
            assert self.upload is not None
            self.upload.drop()
            self._defer(lambda: self._error(code, message, retry))
            return
        self.done = True
        self.status = code
        request.reply(code, message, self.proxy.retry_after if retry else b"")
        self._end(failed=code != 503, status=code)

    def _abort_client(self) -> None:
        """Drop the client: it must never take a cut response for a whole one."""
        self.done = True
        self.request.abort()
        self._end(failed=True, status=self.status)

    def _end(self, failed: bool, status: int) -> None:
        proxy = self.proxy
        lease, self.lease = self.lease, None
        now = proxy.clock.seconds()
        if lease is not None:
            # A tunnel's (101) time to switch was observed when it switched.
            elapsed = None
            if self.upstream_started and status != 101:
                elapsed = now - self.upstream_started
            lease.release(
                failed=failed,
                why=(_FAILURES.get(status) or f"answered {status}") if failed else "",
                # A client that left (499) says nothing of the backend's speed.
                seconds=elapsed if status != 499 else None,
            )
            observe = proxy.observe
            if observe is not None and elapsed is not None:
                observe(lease.backend, status, elapsed)
        if proxy.access_log is not None:
            name = lease.backend.name if lease else "-"
            times = (self.started, self.upstream_started, now)
            sent = self.bytes_sent
            trusted = proxy.trusted_proxies
            proxy.access_log(record(self.request, trusted, status, sent, name, *times))

    # --- the response's back-pressure (registered with the client) ----------------

    def pauseProducing(self) -> None:
        """The client is not reading: pause the backend and its timeout."""
        conn = self.conn
        if conn is not None:
            conn.disarm()
            conn.pauseProducing()

    def resumeProducing(self) -> None:
        conn = self.conn
        if conn is not None and not self.done:
            conn.arm(self.proxy.backend_timeout)
            conn.resumeProducing()

    def stopProducing(self) -> None:
        """The client's connection is gone (L{client_lost} follows)."""
