"""
Where the front end's requests go: the stats app's paths (when it shares the
proxy's port) to the stats app, everything else to a backend.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource
from twisted.web.server import Site

from txlb.config import ClientConfig
from txlb.http.exchange import Exchange
from txlb.http.frontend import HTTPFrontendFactory
from txlb.http.proxy import HTTPProxy
from txlb.http.request import ClientRequest
from txlb.http.webbridge import StatsCall

__all__ = ["RESERVED", "Router", "front_end"]

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
        exchange = Exchange(proxy, request)
        request.handler = exchange
        exchange.begin()


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
    return HTTPFrontendFactory(limits, clock, Router(proxy, stats, clock, reserve))
