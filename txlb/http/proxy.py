"""
What every HTTP exchange (L{txlb.http.exchange}) shares: the registry, the
timeouts and retry budget, the access log, and one connection pool per
backend, which L{HTTPProxy} keeps on each backend as the registry announces
it (L{txlb.core.listeners}); and, when configured, the hash key's reader,
the sticky cookie and the rate limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTCP, IReactorTime
from zope.interface import implementer

from txlb.config import Config, ProxyConfig
from txlb.core.backend import Backend
from txlb.core.listeners import BackendListener, IBackendListener
from txlb.core.ratelimit import IRateLimitStore, RateLimiter
from txlb.core.registry import Registry
from txlb.core.retrybudget import RetryBudget
from txlb.http.headers import TrustedProxies
from txlb.http.keys import KeyReader, key_reader
from txlb.http.sticky import StickyCookies
from txlb.http.upstream import BackendPool

__all__ = ["HTTPProxy"]


@implementer(IBackendListener)
class HTTPProxy(BackendListener):
    """
    The HTTP mode's shared state; as a registry listener it gives each
    backend its connection pool (C{backend.pool}) and closes it when the
    backend is removed.

    @ivar key_of: reads a request's C{hash_key} (with C{algorithm = hash}).
    @ivar sticky: the sticky cookie (with C{sticky}).
    @ivar limiter: the rate limit (with C{[ratelimit]}), and
        C{limit_key_of} its key's reader.
    """

    key_of: KeyReader | None = None
    sticky: StickyCookies | None = None
    limiter: RateLimiter | None = None
    limit_key_of: KeyReader | None = None

    def __init__(
        self,
        registry: Registry,
        reactor: IReactorTCP,
        clock: IReactorTime,
        settings: ProxyConfig,
        retry_after: float,
        access_log: Callable[[dict[str, Any]], None] | None = None,
        observe: Callable[[Backend, int, float], None] | None = None,
    ) -> None:
        """
        @param retry_after: seconds a 503's C{Retry-After} asks a client to
            wait (rounded up, at least 1).
        @param access_log: called with a record of each request.
        @param observe: called with (backend, status, seconds from sending
            to the backend until the response ended) for each request a
            backend answered or failed.
        """
        self.registry = registry
        self.reactor = reactor
        self.clock = clock
        self.settings = settings
        self.observe = observe
        self.access_log = access_log
        self.backend_timeout = settings.backend_timeout
        self.idle_timeout = settings.idle_timeout
        self.retries = settings.retries
        self.budget = RetryBudget(
            settings.retry_budget, settings.min_retries_per_second
        )
        self.retry_after = b"%d" % max(1, math.ceil(retry_after))
        # None when no proxy is trusted: then nobody's X-Forwarded-* is.
        self.trusted_proxies = (
            TrustedProxies(settings.trusted_proxies)
            if settings.trusted_proxies
            else None
        )
        registry.subscribe(self)

    @classmethod
    def from_config(
        cls,
        config: Config,
        registry: Registry,
        reactor: IReactorTCP,
        clock: IReactorTime,
        access_log: Callable[[dict[str, Any]], None] | None = None,
        observe: Callable[[Backend, int, float], None] | None = None,
        ratelimit_store: IRateLimitStore | None = None,
    ) -> HTTPProxy:
        """
        A 503 asks a client to come back after one health interval.

        @param ratelimit_store: where the rate limit's buckets are kept (by
            default in this process).
        """
        proxy = cls(
            registry,
            reactor,
            clock,
            config.proxy,
            config.health.interval,
            access_log,
            observe,
        )
        trusted = proxy.trusted_proxies
        balancing = config.balancing
        if balancing.algorithm == "hash":
            proxy.key_of = key_reader(balancing.hash_key, trusted)
        sticky = config.affinity.sticky
        if sticky is not None:
            proxy.sticky = StickyCookies(
                registry, sticky.name, config.affinity.sticky_max_age, trusted
            )
        limit = config.ratelimit
        if limit.enabled:
            proxy.limiter = RateLimiter(limit, clock, ratelimit_store)
            proxy.limit_key_of = key_reader(limit.key, trusted)
        return proxy

    def backend_added(self, backend: Backend) -> None:
        settings = self.settings
        backend.pool = BackendPool(
            self.reactor,
            self.clock,
            backend.address,
            settings.connect_timeout,
            settings.idle_pool_size,
        )

    def backend_removed(self, backend: Backend) -> None:
        """Close its connections (any still busy: its drain timed out)."""
        backend.pool.abort()

    def why_not_retry(self, tried: int, budgeted: bool) -> str:
        """
        Why a request that failed on C{tried} backends may not be tried on
        one more, or empty if it may (and then a retry the budget counts,
        C{budgeted}, is taken from it): at most C{retries} more backends,
        within the retry budget (L{txlb.core.retrybudget}).
        """
        if tried > self.retries:
            return f"{tried} backends tried"
        if budgeted and not self.budget.retry(self.clock.seconds()):
            return "retry budget used up"
        return ""

    def close(self) -> None:
        """Close idle backend connections (at shutdown)."""
        for backend in self.registry.backends:
            backend.pool.close()
