"""
The HTTP reverse proxy: each request the front end (L{txlb.frontend}) has
parsed goes to the least-loaded backend through pooled keep-alive
connections; paths reserved for the stats app go to its twisted.web site.

One L{_Exchange} carries one client request to a backend and the response
back.  Bodies stream both ways with back-pressure: a request with a body
starts as soon as its head is in (the client is paused until the backend
connection is up), and the exchange is the producer of the response, so a
client that does not read pauses the backend read (and its timeout).  An
C{Upgrade} request (WebSocket) keeps its C{Upgrade} and C{Connection}
headers; after the backend's C{101} the two connections are joined by the
byte relay of L{txlb.tunnel}, and the lease is held until it closes.  The
registry lease is released exactly once, however the exchange ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Site
from zope.interface import implementer

from txlb.config import Config
from txlb.core.registry import Backend, Lease, Registry
from txlb.http.frontend import ClientRequest, HTTPFrontendFactory, Limits
from txlb.http.headers import (
    HOP_BY_HOP,
    TrustedProxies,
    connection_tokens,
    forwarded_chain,
    request_head,
)
from txlb.http.upstream import BackendConnection, BackendPool, _Connect
from txlb.http.webbridge import StatsCall
from txlb.net.tunnel import Relay, Side, adopt

__all__ = ["HTTPProxy", "Router", "front_end"]

_EMPTY: frozenset[bytes] = frozenset()
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# The retry budget always allows this many retries at once (as Envoy does).
_MIN_RETRY_CONCURRENCY = 3
_RESERVED = (b"/api/", b"/dashboard", b"/metrics")


# How a failed exchange is described in the backend's ejection cause.
_FAILURES = {499: "", 502: "bad response", 504: "timed out"}


class HTTPProxy:
    """
    What every exchange shares: the registry, one pool per backend, the
    timeouts and the access log.
    """

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        reactor: IReactorTCP,
        clock: IReactorTime,
        config: Config,
        access_log: Callable[[dict[str, Any]], None] | None = None,
        observe: Callable[[Backend, int, float], None] | None = None,
    ) -> None:
        """
        @param access_log: called with a record of each request.
        @param observe: called with (backend, status, seconds from sending
            to the backend until the response ended) for each request a
            backend answered or failed.
        """
        self.registry = registry
        self.observe = observe
        self.clock = clock
        self.connect_timeout = config.connect_timeout
        self.backend_timeout = config.backend_timeout
        self.idle_timeout = config.idle_timeout
        self.retries = config.retries
        self.retry_budget = config.retry_budget
        self.live = 0
        self.retrying = 0
        self.retry_after = b"%d" % max(1, math.ceil(config.health.interval))
        self.access_log = access_log
        # None when no proxy is trusted: then nobody's X-Forwarded-* is.
        self.trusted_proxies = (
            TrustedProxies(config.trusted_proxies) if config.trusted_proxies else None
        )
        self.pools: dict[Backend, BackendPool] = {
            b: BackendPool(
                reactor, b.address, config.connect_timeout, config.idle_pool_size
            )
            for b in registry.backends
        }

    def may_retry(self) -> bool:
        """
        Whether the retry budget allows one more retry: retries in progress
        stay under C{retry_budget} percent of live requests.
        """
        limit = max(_MIN_RETRY_CONCURRENCY, self.live * self.retry_budget // 100)
        return self.retrying < limit

    def close(self) -> None:
        """Close idle backend connections (at shutdown)."""
        for pool in self.pools.values():
            pool.close()


class Router:
    """
    Where the front end's requests go: to the stats app for its reserved
    paths (when it shares the proxy's port) or when there is no proxy,
    else to a backend through an L{_Exchange}.
    """

    def __init__(
        self,
        proxy: HTTPProxy | None,
        stats: IResource | None,
        clock: IReactorTime,
        reserve: bool = True,
    ) -> None:
        self.proxy = proxy
        self.site = Site(stats, reactor=clock) if stats is not None else None
        self._reserve = reserve and stats is not None

    def reserved(self, path: bytes) -> bool:
        """Whether C{path} belongs to the stats app rather than a backend."""
        return self._reserve and path.startswith(_RESERVED)

    def __call__(self, request: ClientRequest) -> None:
        proxy, site = self.proxy, self.site
        if site is not None and (proxy is None or self.reserved(request.uri)):
            call = StatsCall(request, site)
            request.handler = call
            if request.complete:
                call.start()
            return
        assert proxy is not None
        exchange = _Exchange(proxy, request)
        request.handler = exchange
        exchange.begin()


def front_end(
    proxy: HTTPProxy | None,
    stats: IResource | None,
    limits: Limits,
    clock: IReactorTime,
    reserve: bool = True,
) -> HTTPFrontendFactory:
    """
    The factory of the proxy's client connections.

    @param stats: the stats app, answering C{/api/}, C{/dashboard} and
        C{/metrics} when C{reserve} (it shares the proxy's port), or every
        path when there is no C{proxy}.
    """
    return HTTPFrontendFactory(limits, clock, Router(proxy, stats, clock, reserve))


@implementer(IPushProducer)
class _Exchange:
    """One client request's trip to a backend and back."""

    __slots__ = (
        "attached",
        "attempt",
        "body_complete",
        "body_length",
        "bytes_sent",
        "conn",
        "done",
        "early",
        "head",
        "lease",
        "method",
        "pending",
        "proxy",
        "request",
        "responded",
        "retried",
        "started",
        "status",
        "timer",
        "tried",
        "upgrade",
        "upstream_started",
        "uri",
        "waiter",
    )

    log = Logger()

    def __init__(self, proxy: HTTPProxy, request: ClientRequest) -> None:
        self.proxy = proxy
        self.request = request
        self.lease: Lease | None = None
        self.tried: list[Backend] = []
        self.attempt: _Connect | None = None
        self.conn: BackendConnection | None = None
        # The backend connection whose deadline this exchange has set.
        self.timer: BackendConnection | None = None
        self.attached = False
        self.early: list[Callable[[], None]] | None = None
        self.responded = False
        self.retried = False
        self.done = False
        self.pending: list[bytes] = []
        self.body_complete = False
        self.status = 0
        self.bytes_sent = 0
        self.upstream_started = 0.0
        self.upgrade = b""

    # --- client side ----------------------------------------------------------

    def begin(self) -> None:
        """Start: pick a backend and ask its pool for a connection."""
        request = self.request
        self.started = self.proxy.clock.seconds()
        self.proxy.live += 1
        self.method = method = request.method
        self.uri = request.uri
        self.body_length = body_length = request.body_length
        self.attached = body_length == 0
        if body_length != 0:
            # Hold the body until a backend connection is up.
            self.pending = request.body
            request.body = []
            if not request.complete:
                request.pause_body()
        connection = request.connection
        peer = request.peer
        trusted = self.proxy.trusted_proxies
        if trusted is not None and peer not in trusted:
            trusted = None
        self.head = request_head(
            method,
            self.uri,
            request.headers,
            peer.encode("ascii"),
            b"https" if request.secure else b"http",
            body_length,
            request.local_host.encode("ascii"),
            connection_tokens(connection) if connection else _EMPTY,
            trusted,
        )
        upgrade = request.upgrade if connection else b""
        if (
            upgrade
            and body_length == 0
            and b"upgrade" in connection_tokens(connection)
            and request.version == b"HTTP/1.1"
        ):
            # A protocol switch (WebSocket): the one case where hop-by-hop
            # headers go on, so the backend can answer 101.
            self.upgrade = upgrade
            self.head = (
                self.head[:-2] + b"Connection: upgrade\r\nUpgrade: %s\r\n\r\n" % upgrade
            )
        self._pick()
        if body_length != 0 and request.complete and not self.done:
            self.client_body_done()

    def client_body(self, data: bytes) -> None:
        if self.done:
            return
        conn = self.conn
        if conn is None:
            # Read before the client was paused (often in the head's own
            # packet): bounded by one read, sent once a backend is ready.
            self.pending.append(data)
        elif self.body_length is None:
            conn.send(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            conn.send(data)

    def client_body_done(self) -> None:
        """The whole request body arrived; the request can now be answered."""
        self.body_complete = True
        conn = self.conn
        if conn is not None and not self.done:
            self._body_sent(conn)
        self.attached = True
        early, self.early = self.early, None
        if early:
            for step in early:
                step()

    def client_failed(self) -> None:
        """
        The client's request broke off (an invalid or late body): the
        backend must not take it for complete, so its connection goes.
        The front end answers the client.
        """
        self._abandon(400)

    def client_lost(self) -> None:
        """The client went away: free the backend connection and the lease."""
        self._abandon(499)

    def _abandon(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        waiter = getattr(self, "waiter", None)
        if waiter is not None:
            waiter.cancel()  # idempotent: nothing if it got a lease already
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        self._end(failed=False, status=status)

    # --- choosing a backend ------------------------------------------------------

    def _pick(self) -> None:
        registry = self.proxy.registry
        lease = registry.acquire(self.tried)
        if lease is None:
            if registry.full(self.tried):
                # Every backend it may use is at max_connections: wait in
                # the registry's queue (see Registry.wait).

                def leased(lease: Lease) -> None:
                    self.lease = lease
                    self.tried.append(lease.backend)
                    self.attempt = self.proxy.pools[lease.backend].get(self)

                def timed_out() -> None:
                    message = b"no backend is available: queue timed out"
                    self._error(503, message, retry=True)

                self.waiter = registry.wait(self.tried, leased, timed_out)
                if self.waiter is None:
                    message = b"no backend is available: queue full"
                    self._error(503, message, retry=True)
            elif self.tried:
                self._error(502, b"no backend could be reached")
            else:
                self._error(503, b"no backend is available", retry=True)
            return
        self.lease = lease
        self.tried.append(lease.backend)
        self.attempt = self.proxy.pools[lease.backend].get(self)

    def upstream_ready(self, conn: BackendConnection) -> None:
        self.attempt = None
        if self.done:
            conn.pool.checkin(conn)
            return
        self.conn = conn
        self.upstream_started = self.proxy.clock.seconds()
        conn.start(self, self.head, self.method == b"HEAD")
        if self.body_length == 0:
            conn.request_sent()
            self._start_timer()
            return
        pending, self.pending = self.pending, []
        chunked = self.body_length is None
        for data in pending:
            conn.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if self.body_complete:
            self._body_sent(conn)
        else:
            request = self.request
            conn.transport.registerProducer(request.upload_producer(), True)  # type: ignore[union-attr]
            request.resume_body()

    def _body_sent(self, conn: BackendConnection) -> None:
        """The request body is all in: end it and wait for the answer."""
        if self.body_length is None:
            conn.send(b"0\r\n\r\n")
        if conn.transport.producer is not None:  # type: ignore[union-attr]
            conn.transport.unregisterProducer()  # type: ignore[union-attr]
        conn.request_sent()
        self._start_timer()

    def _start_timer(self) -> None:
        """
        backend_timeout counts from the moment the request is all sent, and
        again from each piece of the response.

        The deadline is kept on the backend connection, whose one timer
        outlives its requests and is moved only when it fires early (see
        L{_deadline_passed}): no timer is made or cancelled per request.
        """
        conn = self.conn
        if conn is None:
            return
        clock = self.proxy.clock
        timeout = self.proxy.backend_timeout
        conn.deadline = clock.seconds() + timeout
        conn.deadline_sink = self
        self.timer = conn
        if conn.deadline_timer is None:
            conn.deadline_timer = clock.callLater(
                timeout, _deadline_passed, conn, clock
            )

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
        allowed = not budgeted or self.retried or proxy.may_retry()
        if len(self.tried) <= proxy.retries and allowed:
            if budgeted and not self.retried:
                self.retried = True
                proxy.retrying += 1
            lease.backend.retries += 1
            self._pick()
        else:
            self.log.warn(
                "not retrying {method} {uri}: {why}",
                method=self.method,
                uri=self.uri,
                why="retry budget used up"
                if len(self.tried) <= proxy.retries
                else f"{len(self.tried)} backends tried",
            )
            self._error(502, message)

    # --- the backend's response ---------------------------------------------------

    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        if not self.attached:
            self._defer(lambda: self.upstream_head(status, reason, headers))
            return
        self.responded = True
        self.status = status
        drop = _EMPTY
        for name, value in headers:
            if name.lower() == b"connection":
                drop = connection_tokens([value])
        saw_date = length_known = False
        out = []
        for name, value in headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in drop:
                continue
            if lower == b"date":
                saw_date = True
            elif lower == b"content-length":
                length_known = True
            out.append((name, value))
        if not saw_date:
            out.append((b"Date", http.datetimeToString()))
        request = self.request
        request.respond(
            status, reason or http.RESPONSES.get(status, b""), out, length_known
        )
        if self.conn is not None:
            request.send_response_producer(self)

    def upstream_body(self, data: bytes) -> None:
        if not self.attached:
            self._defer(lambda: self.upstream_body(data))
            return
        self.bytes_sent += len(data)
        self.request.write(data)
        timed = self.timer
        if timed is not None:
            timed.deadline = self.proxy.clock.seconds() + self.proxy.backend_timeout

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
        if (
            not response_started
            and conn is not None
            and conn.reused
            and self.body_length == 0
            and self.method in _IDEMPOTENT
        ):
            # The backend closed an idle keep-alive connection as we reused
            # it: replay on a fresh connection to the same backend.
            self._cancel_timer()
            lease = self.lease
            assert lease is not None
            self.attempt = self.proxy.pools[lease.backend].get(self, fresh=True)
            return
        self.log.warn(
            "backend {backend} failed: {why}",
            backend=self.lease.backend.name if self.lease else "?",
            why=why,
        )
        if self.responded:
            self._abort_client(why)
        elif (
            not response_started
            and self.body_length == 0
            and self.method in _IDEMPOTENT
            and self.lease is not None
        ):
            # Reset before any answer, and nothing is lost by replaying.
            self._cancel_timer()
            self._retry_elsewhere(
                "reset before answering", b"the backend failed", budgeted=True
            )
        else:
            self._error(502, b"the backend failed")

    def upstream_upgraded(
        self, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """
        The backend switched protocols: send its 101 to the client, then
        relay raw bytes both ways until either side closes.

        The lease stays held, so the tunnel counts as an active connection
        on its backend; the exchange ends (lease released once, access log
        written with status 101) when the relay does.
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
        self._cancel_timer()
        self.done = self.responded = True
        self.status = 101
        proxy, lease = self.proxy, self.lease
        if proxy.observe is not None and lease is not None:
            proxy.observe(
                lease.backend, 101, proxy.clock.seconds() - self.upstream_started
            )
        # Take the client's connection from the front end: no more
        # parsing, no more deadlines.
        transport, early = self.request.take_over()
        transport.write(_switching_head(reason, headers))
        if rest:
            transport.write(rest)
        if early:
            conn.transport.write(early)
        client, backend = Side(), Side()
        adopt(transport, client)
        adopt(conn.transport, backend)
        peer = self.request.peer or "?"
        Relay(
            proxy.clock,
            proxy.idle_timeout,
            self._tunnel_ended,
            label=f"{self.upgrade.decode('latin-1')} {peer} <-> "
            + (lease.backend.name if lease else "?"),
        ).join(client, backend)

    def _tunnel_ended(self, relay: Relay, why: str) -> None:
        self.bytes_sent = relay.bytes_down
        self._end(failed=False, status=101)

    def _timed_out(self) -> None:
        self._cancel_timer()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        if self.done:
            return
        if self.responded:
            self._abort_client("backend timed out mid-response")
        else:
            self._error(504, b"the backend did not answer in time")

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
            # Let the rest of the body in (it is discarded) so the request
            # completes and can be answered.
            request.resume_body()
            self._defer(lambda: self._error(code, message, retry))
            return
        self.done = True
        self.status = code
        body = message + b"\n"
        out = [
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Date", http.datetimeToString()),
            (b"Content-Length", b"%d" % len(body)),
        ]
        if retry:
            out.append((b"Retry-After", self.proxy.retry_after))
        request.send_response_producer(None)
        request.respond(code, http.RESPONSES.get(code, b""), out, True)
        request.write(body)
        request.finish()
        self._end(failed=code != 503, status=code)

    def _abort_client(self, why: str) -> None:
        """
        The response cannot be completed: drop the client connection so it
        never mistakes a truncated response for a whole one.
        """
        self.done = True
        self.request.abort()
        self._end(failed=True, status=self.status)

    def _cancel_timer(self) -> None:
        timed, self.timer = self.timer, None
        if timed is not None:
            timed.deadline = 0.0
            timed.deadline_sink = None

    def _end(self, failed: bool, status: int) -> None:
        self._cancel_timer()
        proxy = self.proxy
        proxy.live -= 1
        if self.retried:
            proxy.retrying -= 1
        lease, self.lease = self.lease, None
        if lease is not None:
            # A tunnel's (101) time to switch was observed when it switched.
            elapsed = None
            if self.upstream_started and status != 101:
                elapsed = proxy.clock.seconds() - self.upstream_started
            lease.release(
                failed=failed,
                why=_FAILURES.get(status) or f"answered {status}",
                # A client that left (499) says nothing of the backend's speed.
                seconds=elapsed if status != 499 else None,
            )
            observe = proxy.observe
            if observe is not None and elapsed is not None:
                observe(lease.backend, status, elapsed)
        log = self.proxy.access_log
        if log is not None:
            self._log_access(log, lease, status)

    def _log_access(
        self,
        log: Callable[[dict[str, Any]], None],
        lease: Lease | None,
        status: int,
    ) -> None:
        request = self.request
        now = self.proxy.clock.seconds()
        client = request.peer or "-"
        trusted = self.proxy.trusted_proxies
        if trusted is not None and client in trusted:
            # Behind a trusted proxy the client is the one it names.
            chain = request.values(b"x-forwarded-for")
            client = forwarded_chain(chain, b"", trusted)[0].decode("latin-1") or client
        log(
            {
                "time": now,
                "client": client,
                "method": self.method.decode("latin-1"),
                "uri": self.uri.decode("latin-1"),
                "protocol": request.version.decode("latin-1"),
                "status": status,
                "bytes": self.bytes_sent,
                "referer": (request.value(b"referer") or b"-").decode("latin-1"),
                "user_agent": (request.value(b"user-agent") or b"-").decode("latin-1"),
                "backend": lease.backend.name if lease else "-",
                "upstream_time": (now - self.upstream_started)
                if self.upstream_started
                else None,
                "total_time": now - self.started,
            }
        )

    # --- the response's back-pressure (registered with the client) ----------------

    def pauseProducing(self) -> None:
        """The client is not reading: pause the backend and its timeout."""
        self._cancel_timer()
        conn = self.conn
        if conn is not None:
            conn.pauseProducing()

    def resumeProducing(self) -> None:
        conn = self.conn
        if conn is not None and not self.done:
            if self.timer is None:
                self._start_timer()
            conn.resumeProducing()

    def stopProducing(self) -> None:
        """The client's connection is gone (L{client_lost} follows)."""


def _deadline_passed(conn: BackendConnection, clock: IReactorTime) -> None:
    """A backend connection's timer fired: time out its exchange if due."""
    conn.deadline_timer = None
    deadline = conn.deadline
    if not deadline:
        return  # no request waiting on it
    left = deadline - clock.seconds()
    if left > 0:
        conn.deadline_timer = clock.callLater(left, _deadline_passed, conn, clock)
        return
    sink = conn.deadline_sink
    if sink is not None:
        sink._timed_out()


def _switching_head(reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """
    The client's C{101} head: the backend's end-to-end headers, and its
    C{Upgrade} with C{Connection: Upgrade} (the only hop-by-hop ones kept).
    """
    drop = _EMPTY
    upgrade = b""
    for name, value in headers:
        lower = name.lower()
        if lower == b"connection":
            drop = connection_tokens([value])
        elif lower == b"upgrade":
            upgrade = value
    parts = [b"HTTP/1.1 101 ", reason or b"Switching Protocols", b"\r\n"]
    for name, value in headers:
        lower = name.lower()
        if lower not in HOP_BY_HOP and lower not in drop:
            parts += [name, b": ", value, b"\r\n"]
    parts += [b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n\r\n"]
    return b"".join(parts)
