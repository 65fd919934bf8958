"""
The workers' sticky-cookie and rate-limit counts, summed for the
supervisor's views (L{txlb.observe.features}): each worker sends its own
in every heartbeat (L{counts_of}); a worker that ends leaves its last
counts to the totals, so the sums only grow, as Prometheus counters must.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from txlb.core.ratelimit import RECENT_SECONDS, IRateLimitStore, RateLimiter
from txlb.http.sticky import StickyCookies
from txlb.settings import RateLimitConfig

__all__ = ["FeatureTotals", "SummedLimiter", "SummedSticky", "counts_of"]

_COUNTERS = ("hits", "misses", "set", "allowed", "limited")


def counts_of(
    sticky: StickyCookies | None, limiter: RateLimiter | None
) -> dict[str, Any]:
    """A worker's counts, for its heartbeat."""
    counts: dict[str, Any] = {}
    if sticky is not None:
        counts.update(
            hits=sticky.hits,
            misses=sticky.misses,
            set=sticky.set,
            reasons=dict(sticky.reasons),
        )
    if limiter is not None:
        snapshot = limiter.snapshot()
        counts.update(
            allowed=limiter.allowed,
            limited=limiter.limited,
            recent=snapshot["clients_limited_recently"],
        )
    return counts


class FeatureTotals:
    """
    Every worker's counts summed: those of the workers running (their last
    heartbeat's) and those left by workers that ended.
    """

    def __init__(self, running: Callable[[], Iterable[dict[str, Any]]]) -> None:
        """@param running: each running worker's last counts."""
        self._running = running
        self._left: Counter[str] = Counter()
        self._left_reasons: Counter[str] = Counter()

    def left(self, counts: dict[str, Any]) -> None:
        """A worker ended: its counts stay in the totals."""
        for name in _COUNTERS:
            self._left[name] += counts.get(name, 0)
        self._left_reasons.update(counts.get("reasons", {}))

    def total(self, name: str) -> int:
        return self._left[name] + sum(int(c.get(name, 0)) for c in self._running())

    def reasons(self) -> Counter[str]:
        reasons = Counter(self._left_reasons)
        for counts in self._running():
            reasons.update(counts.get("reasons", {}))
        return reasons

    def recent(self) -> int:
        """Clients limited lately, summed (one limited in two workers counts twice)."""
        return sum(c.get("recent", 0) for c in self._running())


class SummedSticky:
    """The sticky cookie's counts of all workers (what the views read)."""

    def __init__(self, totals: FeatureTotals, name: bytes) -> None:
        self._totals = totals
        self.name = name

    @property
    def hits(self) -> int:
        return self._totals.total("hits")

    @property
    def misses(self) -> int:
        return self._totals.total("misses")

    @property
    def set(self) -> int:
        return self._totals.total("set")

    @property
    def reasons(self) -> Counter[str]:
        return self._totals.reasons()

    def snapshot(self) -> dict[str, Any]:
        return {
            "cookie": self.name.decode(),
            "hits": self.hits,
            "misses": self.misses,
            "miss_reasons": dict(self.reasons),
            "set_cookies": self.set,
        }


class SummedLimiter:
    """The rate limit's answers in all workers, over their one shared store."""

    def __init__(
        self,
        totals: FeatureTotals,
        config: RateLimitConfig,
        store: IRateLimitStore,
        recent_seconds: float = RECENT_SECONDS,
    ) -> None:
        self._totals = totals
        self.config = config
        self.store = store
        self._recent_seconds = recent_seconds

    @property
    def allowed(self) -> int:
        return self._totals.total("allowed")

    @property
    def limited(self) -> int:
        return self._totals.total("limited")

    def snapshot(self) -> dict[str, Any]:
        config = self.config
        return {
            "rate": config.rate,
            "burst": config.bucket,
            "key": str(config.key),
            "allowed": self.allowed,
            "limited": self.limited,
            "clients_tracked": len(self.store),
            "clients_limited_recently": self._totals.recent(),
            "recent_seconds": self._recent_seconds,
        }
