"""
What the views show of the parts that are on only when configured: the hash
ring's share of keys per backend, the sticky cookie's hits and misses, the
rate limit's answers.  L{show} adds them to C{/api/server-stats} (a section
each, and C{key_share} per backend), to C{/api/decisions} and to
C{/metrics}; without them the views are as they were.

C{key_share} is each backend's part of the ring, the share of all possible
keys that map to it (exact, recomputed when the rotation changes), not a
count of recent keys: it says where keys go before the bound moves any.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from txlb.core.backend import Backend
from txlb.core.hashring import ConsistentHash
from txlb.core.ratelimit import RateLimiter
from txlb.core.registry import Registry
from txlb.http.sticky import StickyCookies
from txlb.observe.webapp import StatsApp

__all__ = ["FeatureCollector", "show"]


def show(
    app: StatsApp,
    registry: Registry,
    sticky: StickyCookies | None,
    limiter: RateLimiter | None,
) -> None:
    """Add what is configured of hash, sticky and the rate limit to C{app}'s views."""
    policy = registry.policy
    ring = policy if isinstance(policy, ConsistentHash) else None
    stats = app.stats
    decisions = registry.decisions
    if ring is not None:

        def key_share(backend: Backend) -> dict[str, Any]:
            return {"key_share": round(ring.key_shares.get(backend.name, 0.0), 4)}

        def hashing() -> dict[str, Any]:
            return {
                "key": ring.key_name,
                "balance_factor": ring.factor,
                "ring_points": len(ring.ring.points),
                "load": ring.load + ring.others,
            }

        stats.backend_fields.append(key_share)
        stats.sections["hash"] = hashing
        decisions.sections["hash"] = hashing
    if sticky is not None:
        stats.sections["sticky"] = sticky.snapshot
        decisions.sections["sticky"] = sticky.snapshot
    if limiter is not None:
        stats.sections["ratelimit"] = limiter.snapshot
        decisions.sections["ratelimit"] = limiter.snapshot
    if ring is not None or sticky is not None or limiter is not None:
        app.metrics.prometheus.register(
            FeatureCollector(registry, ring, sticky, limiter)
        )


class FeatureCollector(Collector):
    """Reads the configured parts' counters at scrape time."""

    def __init__(
        self,
        registry: Registry,
        ring: ConsistentHash | None,
        sticky: StickyCookies | None,
        limiter: RateLimiter | None,
    ) -> None:
        self._registry = registry
        self._ring = ring
        self._sticky = sticky
        self._limiter = limiter

    def collect(self) -> Iterator[Metric]:
        ring = self._ring
        if ring is not None:
            share = GaugeMetricFamily(
                "txlb_backend_key_share",
                "The backend's part of the hash ring (of all keys), 0 to 1.",
                labels=["backend"],
            )
            for b in self._registry.backends:
                share.add_metric([b.name], ring.key_shares.get(b.name, 0.0))
            yield share
        sticky = self._sticky
        if sticky is not None:
            yield CounterMetricFamily(
                "txlb_sticky_hits",
                "Requests sent to the backend their sticky cookie named.",
                value=sticky.hits,
            )
            misses = CounterMetricFamily(
                "txlb_sticky_misses",
                "Requests balanced again: no cookie, an unknown one, or its"
                " backend out of rotation, full or tried already.",
                labels=["reason"],
            )
            for reason, count in sorted(sticky.reasons.items()):
                misses.add_metric([reason], count)
            yield misses
            yield CounterMetricFamily(
                "txlb_sticky_cookies_set",
                "Responses that set the sticky cookie.",
                value=sticky.set,
            )
        limiter = self._limiter
        if limiter is not None:
            yield CounterMetricFamily(
                "txlb_ratelimit_allowed",
                "Requests the rate limit let in.",
                value=limiter.allowed,
            )
            yield CounterMetricFamily(
                "txlb_ratelimit_limited",
                "Requests answered 429 by the rate limit.",
                value=limiter.limited,
            )
            yield GaugeMetricFamily(
                "txlb_ratelimit_clients",
                "Clients whose token buckets are kept now.",
                value=len(limiter.store),
            )
