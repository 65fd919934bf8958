"""
Where the front end's requests go: the stats app's paths (when it shares the
proxy's port) to the stats app, everything else to a backend; with
C{[ratelimit]}, a request over its client's limit to a 429 instead
(L{LimitedRouter}: the stats app's paths are never limited).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource
from twisted.web.server import Site

from txlb.config import ClientConfig
from txlb.http.affinity import AffinityExchange
from txlb.http.exchange import Exchange
from txlb.http.frontend import HTTPFrontendFactory
from txlb.http.keys import client_ip
from txlb.http.limit import TooManyRequests
from txlb.http.proxy import HTTPProxy
from txlb.http.request import ClientRequest, RequestHandler
from txlb.http.webbridge import StatsCall

__all__ = [
    "RESERVED",
    "LimitedRouter",
    "Router",
    "StatsHandler",
    "front_end",
    "site_handler",
]

READINESS = b"/healthz"
"""Answered by the stats app exactly (with or without a query string)."""

RESERVED = (b"/api/", b"/dashboard", b"/metrics", READINESS)
"""Paths the stats app answers when it shares the proxy's port."""


class StatsHandler(RequestHandler, Protocol):
    """A handler for the stats app's requests, started once the request is whole."""

    def start(self) -> None: ...


def site_handler(
    stats: IResource, clock: IReactorTime
) -> Callable[[ClientRequest], StatsHandler]:
    """The stats app answering on the proxy's port, in this process."""
    site = Site(stats, reactor=clock)
    return lambda request: StatsCall(request, site)


class Router:
    """
    Gives each request its handler: the stats app for its reserved paths
    (when it shares the proxy's port) or when there is no proxy, else an
    L{Exchange} with a backend.  A proxy with a rate limit gets a
    L{LimitedRouter} (made by this class, so that every maker of a router
    gets the right one), and without one a request takes no step for it.
    """

    def __new__(
        cls,
        proxy: HTTPProxy | None,
        stats: Callable[[ClientRequest], StatsHandler] | None,
        reserve: bool = True,
    ) -> Router:
        if cls is Router and proxy is not None and proxy.limiter is not None:
            cls = LimitedRouter
        return super().__new__(cls)

    def __init__(
        self,
        proxy: HTTPProxy | None,
        stats: Callable[[ClientRequest], StatsHandler] | None,
        reserve: bool = True,
    ) -> None:
        """
        @param stats: makes the handler of a stats app request (the app in
            this process, or a worker's way to its supervisor's).
        """
        self.proxy = proxy
        self.stats = stats
        self._reserve = reserve and stats is not None
        # The plain exchange unless the backend may follow the request.
        self.exchange: type[Exchange] = Exchange
        if proxy is not None and (proxy.key_of or proxy.sticky):
            self.exchange = AffinityExchange

    def reserved(self, path: bytes) -> bool:
        """Whether C{path} belongs to the stats app rather than a backend."""
        if not (self._reserve and path.startswith(RESERVED)):
            return False
        # /healthz itself, not /healthzone (one test more, and only here).
        return not path.startswith(READINESS) or path[8:9] in (b"", b"?")

    def __call__(self, request: ClientRequest) -> None:
        proxy, stats = self.proxy, self.stats
        if stats is not None and (proxy is None or self.reserved(request.uri)):
            call = stats(request)
            request.handler = call
            if request.complete:
                call.start()
            return
        assert proxy is not None
        exchange = self.exchange(proxy, request)
        request.handler = exchange
        exchange.begin()


class LimitedRouter(Router):
    """
    A L{Router} that first asks the rate limit of every request it would
    send to a backend.  A request without the header C{[ratelimit] key}
    names is counted by its client's address, so that leaving the header
    out escapes nothing.
    """

    def __call__(self, request: ClientRequest) -> None:
        proxy = self.proxy
        if proxy is not None and not self.reserved(request.uri):
            key_of = proxy.limit_key_of
            limiter = proxy.limiter
            assert key_of is not None and limiter is not None
            key = key_of(request) or client_ip(request, proxy.trusted_proxies)
            retry_after = limiter.check(key)
            if retry_after is not None:
                TooManyRequests(request, retry_after).start()
                return
        super().__call__(request)


def front_end(
    proxy: HTTPProxy | None,
    stats: IResource | None,
    limits: ClientConfig,
    clock: IReactorTime,
    reserve: bool = True,
) -> HTTPFrontendFactory:
    """
    The factory of the proxy's client connections.

    @param stats: the stats app, answering C{/api/}, C{/dashboard},
        C{/metrics} and C{/healthz} when C{reserve} (it shares the proxy's
        port), or every path when there is no C{proxy}.
    """
    handler = site_handler(stats, clock) if stats is not None else None
    return HTTPFrontendFactory(limits, clock, Router(proxy, handler, reserve))
