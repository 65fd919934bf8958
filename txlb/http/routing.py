"""
Where the front end's requests go: the stats app's paths (when it shares the
proxy's port) to the stats app, everything else to a backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource
from twisted.web.server import Site

from txlb.config import ClientConfig
from txlb.http.exchange import Exchange
from txlb.http.frontend import HTTPFrontendFactory
from txlb.http.proxy import HTTPProxy
from txlb.http.request import ClientRequest, RequestHandler
from txlb.http.webbridge import StatsCall

__all__ = ["RESERVED", "Router", "StatsHandler", "front_end", "site_handler"]

RESERVED = (b"/api/", b"/dashboard", b"/metrics")
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
    L{Exchange} with a backend.
    """

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

    def reserved(self, path: bytes) -> bool:
        """Whether C{path} belongs to the stats app rather than a backend."""
        return self._reserve and path.startswith(RESERVED)

    def __call__(self, request: ClientRequest) -> None:
        proxy, stats = self.proxy, self.stats
        if stats is not None and (proxy is None or self.reserved(request.uri)):
            call = stats(request)
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
    handler = site_handler(stats, clock) if stats is not None else None
    return HTTPFrontendFactory(limits, clock, Router(proxy, handler, reserve))
