"""Tests for L{txlb.core.ratelimit}: token buckets per client."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txlb.core.ratelimit import IRateLimitStore, LocalBuckets, RateLimiter
from txlb.requestkey import RequestKey
from txlb.settings import RateLimitConfig


class ReferenceBucket:
    """A token bucket written the obvious way: refill, then take."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens: dict[bytes, tuple[float, float]] = {}

    def take(self, key: bytes, now: float) -> bool:
        tokens, stamp = self.tokens.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        if tokens >= 1 - 1e-9:
            self.tokens[key] = (tokens - 1, now)
            return True
        self.tokens[key] = (tokens, now)
        return False


class LocalBucketsTests(SynchronousTestCase):
    def test_interface(self) -> None:
        """The in-process store provides the store interface the workers share."""
        self.assertTrue(verifyObject(IRateLimitStore, LocalBuckets()))

    def test_burst_then_one_per_interval(self) -> None:
        """A full bucket lets C{burst} requests in at once, then one per 1/rate."""
        store = LocalBuckets()
        answers = [store.take(b"a", 100.0, 2.0, 3) for _ in range(4)]
        self.assertEqual([ok for ok, _ in answers], [True, True, True, False])
        self.assertAlmostEqual(answers[-1][1], 0.5)
        self.assertEqual(store.take(b"a", 100.49, 2.0, 3)[0], False)
        self.assertEqual(store.take(b"a", 100.5, 2.0, 3), (True, 0.0))
        self.assertEqual(store.take(b"a", 100.5, 2.0, 3)[0], False)
        # Another client has its own bucket.
        self.assertEqual(store.take(b"b", 100.5, 2.0, 3), (True, 0.0))

    def test_retry_after_is_when_a_token_comes(self) -> None:
        """The refusal says how long until the next token, exactly."""
        store = LocalBuckets()
        store.take(b"a", 0.0, 0.25, 1)
        ok, wait = store.take(b"a", 1.0, 0.25, 1)
        self.assertFalse(ok)
        self.assertAlmostEqual(wait, 3.0)
        self.assertTrue(store.take(b"a", 1.0 + wait, 0.25, 1)[0])

    def test_a_million_clients_in_bounded_memory(self) -> None:
        """A million distinct clients, a thousand a second: only the last two
        periods' (2 x burst / rate seconds) are kept, however many came."""
        store = LocalBuckets()
        sizes = []
        for i in range(1_000_000):
            now = i / 1000.0
            store.take(b"%d" % i, now, 10.0, 20)
            if i % 100_000 == 99_999:
                sizes.append(len(store))
        # burst / rate = 2 s: at most 4 s of clients, 4000.
        self.assertLessEqual(max(sizes), 4000)
        self.assertGreaterEqual(min(sizes), 2000)
        self.assertLess(store.size_bytes(), 1 << 20)

    def test_a_million_clients_at_once_are_capped(self) -> None:
        """A million distinct clients within one period: the generations turn
        over early, so at most twice max_clients buckets are kept."""
        store = LocalBuckets(max_clients=50_000)
        for i in range(1_000_000):
            store.take(b"%d" % i, 5.0, 1.0, 10)
        self.assertLessEqual(len(store), 100_000)
        self.assertLess(store.size_bytes(), 16 << 20)

    def test_long_keys_are_kept_short(self) -> None:
        """A long key (a header) is kept as a digest, and still counted as itself."""
        store = LocalBuckets()
        key = b"x" * 4000
        self.assertTrue(store.take(key, 0.0, 1.0, 1)[0])
        self.assertFalse(store.take(key, 0.0, 1.0, 1)[0])
        self.assertLess(store.size_bytes(), 2000)

    def test_a_client_seen_before_a_turnover_keeps_its_bucket(self) -> None:
        """A bucket touched just before the generations turn over is kept:
        an empty bucket stays empty across the turnover."""
        store = LocalBuckets()
        store.take(b"a", 0.0, 1.0, 1)  # the first period ends at 1.0
        self.assertTrue(store.take(b"b", 0.9, 1.0, 1)[0])
        ok, wait = store.take(b"b", 1.2, 1.0, 1)
        self.assertFalse(ok)
        self.assertAlmostEqual(wait, 0.7)
        self.assertTrue(store.take(b"b", 1.9, 1.0, 1)[0])

    @settings(max_examples=200, deadline=None)
    @given(
        st.floats(0.5, 5.0),
        st.integers(1, 4),
        st.lists(
            st.tuples(st.integers(0, 2), st.floats(0.0, 1.0)), min_size=1, max_size=100
        ),
    )
    def test_same_answers_as_a_plain_token_bucket(
        self, rate: float, burst: int, requests: list[tuple[int, float]]
    ) -> None:
        """Expiry changes no answer: the store agrees with a token bucket that
        never forgets, request by request."""
        store = LocalBuckets()
        reference = ReferenceBucket(rate, burst)
        now = 0.0
        for client, gap in requests:
            now += gap
            key = b"client-%d" % client
            ok, _ = store.take(key, now, rate, burst)
            self.assertEqual(ok, reference.take(key, now), (key, now))


class RateLimiterTests(SynchronousTestCase):
    def test_counts_and_snapshot(self) -> None:
        """The limiter counts answers and clients for the views."""
        clock = Clock()
        config = RateLimitConfig(rate=1.0, burst=2, key=RequestKey("client_ip"))
        limiter = RateLimiter(config, clock)
        results = [limiter.check(b"a") for _ in range(3)]
        self.assertEqual(results[:2], [None, None])
        self.assertAlmostEqual(results[2], 1.0)  # type: ignore[arg-type]
        clock.advance(1)
        self.assertIsNone(limiter.check(b"a"))
        snapshot = limiter.snapshot()
        self.assertEqual(
            {k: snapshot[k] for k in ("allowed", "limited", "clients_tracked")},
            {"allowed": 3, "limited": 1, "clients_tracked": 1},
        )
        self.assertEqual(snapshot["clients_limited_recently"], 1)
        self.assertEqual((snapshot["rate"], snapshot["burst"]), (1.0, 2))

    def test_burst_defaults_to_the_rate(self) -> None:
        """Without a burst, a client may send one second's worth at once."""
        self.assertEqual(RateLimitConfig(rate=2.5).bucket, 3)
        self.assertEqual(RateLimitConfig(rate=0.2).bucket, 1)
        self.assertEqual(RateLimitConfig(rate=5, burst=9).bucket, 9)
