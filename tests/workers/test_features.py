"""Tests for L{txlb.workers.features}: the workers' counts summed."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.core.ratelimit import RateLimiter
from txlb.settings import RateLimitConfig
from txlb.workers.buckets import SharedBuckets
from txlb.workers.features import (
    FeatureTotals,
    SummedLimiter,
    SummedSticky,
    counts_of,
)


class _Sticky:
    def __init__(self) -> None:
        self.hits, self.misses, self.set = 7, 3, 2
        self.reasons = Counter({"no cookie": 2, "backend down": 1})


class FeatureTotalsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.running: list[dict[str, Any]] = [
            {"hits": 5, "misses": 1, "reasons": {"no cookie": 1}, "allowed": 9},
            {"hits": 2, "misses": 2, "reasons": {"no cookie": 2}, "limited": 4},
        ]
        self.totals = FeatureTotals(lambda: self.running)

    def test_sums_the_running_workers(self) -> None:
        sticky = SummedSticky(self.totals, b"SRV")
        self.assertEqual((sticky.hits, sticky.misses, sticky.set), (7, 3, 0))
        self.assertEqual(
            sticky.snapshot(),
            {
                "cookie": "SRV",
                "hits": 7,
                "misses": 3,
                "miss_reasons": {"no cookie": 3},
                "set_cookies": 0,
            },
        )

    def test_a_worker_that_ended_still_counts(self) -> None:
        """Its last counts stay, and its restart counts from 0 on top: the
        sums never go down."""
        gone = self.running.pop()
        self.totals.left(gone)
        self.running.append({"hits": 1, "reasons": {"backend down": 1}})
        sticky = SummedSticky(self.totals, b"SRV")
        self.assertEqual(sticky.hits, 8)
        self.assertEqual(sticky.reasons, Counter({"no cookie": 3, "backend down": 1}))
        self.assertEqual(self.totals.total("limited"), 4)

    def test_limiter_over_the_shared_store(self) -> None:
        clock = Clock()
        store = SharedBuckets.create(clock, sets=4)
        self.addCleanup(os.close, store.fd)
        self.addCleanup(store.close)
        store.take(b"a", 0.0, 1.0, 2)
        config = RateLimitConfig(rate=1.0, burst=2)
        limiter = SummedLimiter(self.totals, config, store)
        snapshot = limiter.snapshot()
        self.assertEqual((snapshot["allowed"], snapshot["limited"]), (9, 4))
        self.assertEqual((snapshot["rate"], snapshot["burst"]), (1.0, 2))
        self.assertEqual(snapshot["clients_tracked"], 1)


class CountsOfTests(SynchronousTestCase):
    def test_a_workers_heartbeat_counts(self) -> None:
        clock = Clock()
        limiter = RateLimiter(RateLimitConfig(rate=1.0, burst=1), clock)
        limiter.check(b"x")
        limiter.check(b"x")
        counts = counts_of(_Sticky(), limiter)  # type: ignore[arg-type]
        self.assertEqual(
            counts,
            {
                "hits": 7,
                "misses": 3,
                "set": 2,
                "reasons": {"no cookie": 2, "backend down": 1},
                "allowed": 1,
                "limited": 1,
                "recent": 1,
            },
        )
        self.assertEqual(counts_of(None, None), {})
