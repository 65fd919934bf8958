"""
Where the front end's requests go: the stats app's paths (when it shares the
proxy's port) to the stats app, everything else to a backend; with
C{[ratelimit]}, a request over its client's limit to a 429 instead
(L{LimitedRouter}: the stats app's paths are never limited).
"""

from __future__ import annotations

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
from txlb.http.request import ClientRequest
from txlb.http.webbridge import StatsCall

__all__ = ["RESERVED", "LimitedRouter", "Router", "front_end"]

RESERVED = (b"/api/", b"/dashboard", b"/metrics")
"""Paths the stats app answers when it shares the proxy's port."""


class Router:
    """
    Gives each request its handler: the stats app for its reserved paths
    (when it shares the proxy's port) or when there is no proxy, else an
    L{Exchange} with a backend.
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
        # The plain exchange unless the backend may follow the request.
        self.exchange: type[Exchange] = Exchange
        if proxy is not None and (proxy.key_of or proxy.sticky):
            self.exchange = AffinityExchange

    def reserved(self, path: bytes) -> bool:
        """Whether C{path} belongs to the stats app rather than a backend."""
        return self._reserve and path.startswith(RESERVED)

    def __call__(self, request: ClientRequest) -> None:
        proxy, site = self.proxy, self.site
        if site is not None and (proxy is None or self.reserved(request.uri)):
            call = StatsCall(request, site)
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

    @param stats: the stats app, answering C{/api/}, C{/dashboard} and
        C{/metrics} when C{reserve} (it shares the proxy's port), or every
        path when there is no C{proxy}.
    """
    limited = proxy is not None and proxy.limiter is not None
    router = (LimitedRouter if limited else Router)(proxy, stats, clock, reserve)
    return HTTPFrontendFactory(limits, clock, router)
