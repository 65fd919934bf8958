"""Tests for L{txlb.workers.buckets}: the rate limit's buckets the workers share."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.core.ratelimit import IRateLimitStore, LocalBuckets
from txlb.workers.buckets import WAYS, SharedBuckets, size


def table(sets: int = 64) -> tuple[SharedBuckets, Clock]:
    clock = Clock()
    return SharedBuckets.create(clock, sets), clock


class SharedBucketsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.buckets, self.clock = table()
        self.addCleanup(os.close, self.buckets.fd)
        self.addCleanup(self.buckets.close)

    def test_provides_the_store_interface(self) -> None:
        self.assertTrue(IRateLimitStore.providedBy(self.buckets))

    def test_burst_then_rate(self) -> None:
        """A burst of 3 at 2 a second: three in, the fourth told to wait half
        a second, then one more each half second."""
        take = self.buckets.take
        self.assertEqual([take(b"c", 10.0, 2.0, 3)[0] for _ in range(3)], [True] * 3)
        ok, wait = take(b"c", 10.0, 2.0, 3)
        self.assertFalse(ok)
        self.assertAlmostEqual(wait, 0.5)
        self.assertEqual(take(b"c", 10.5, 2.0, 3), (True, 0.0))
        self.assertFalse(take(b"c", 10.5, 2.0, 3)[0])
        self.assertEqual(take(b"other", 10.5, 2.0, 3), (True, 0.0))

    def test_another_mapping_shares_the_buckets(self) -> None:
        """A second mapping of the file (another worker) takes from the same
        buckets: the client's burst is spent across both."""
        fd = os.dup(self.buckets.fd)
        other = SharedBuckets(fd, self.clock, 64)
        self.addCleanup(os.close, fd)
        self.addCleanup(other.close)
        answers = [
            (self.buckets if i % 2 else other).take(b"c", 5.0, 1.0, 4)[0]
            for i in range(6)
        ]
        self.assertEqual(answers, [True] * 4 + [False] * 2)

    def test_a_full_set_gives_up_the_longest_refilled(self) -> None:
        """With one set, a fifth client takes the entry of the client whose
        bucket refilled longest ago; the others keep theirs."""
        buckets, _ = table(sets=1)
        self.addCleanup(os.close, buckets.fd)
        self.addCleanup(buckets.close)
        for i, key in enumerate([b"a", b"b", b"c", b"d"]):
            buckets.take(key, float(i), 1.0, 1)  # TATs 1, 2, 3, 4
        self.assertTrue(buckets.take(b"e", 3.5, 1.0, 1)[0])  # replaces a
        self.assertFalse(buckets.take(b"d", 3.5, 1.0, 1)[0])
        self.assertFalse(buckets.take(b"e", 3.5, 1.0, 1)[0])
        self.assertTrue(buckets.take(b"a", 3.5, 1.0, 1)[0])  # new again

    def test_tracked_clients(self) -> None:
        """len: the clients whose bucket has not refilled yet."""
        self.clock.advance(100)
        for key in (b"a", b"b", b"c"):
            self.buckets.take(key, 100.0, 1.0, 5)
        self.assertEqual(len(self.buckets), 3)
        self.clock.advance(0.999)
        self.assertEqual(len(self.buckets), 3)
        self.clock.advance(0.002)
        self.assertEqual(len(self.buckets), 0)

    def test_memory_is_fixed(self) -> None:
        """The file is the table's size whatever the clients."""
        self.assertEqual(size(1 << 16), 4 * 1024 * 1024)
        for i in range(2000):
            self.buckets.take(b"client-%d" % i, 1.0, 1.0, 1)
        self.assertEqual(os.fstat(self.buckets.fd).st_size, size(64))
        self.assertEqual(len(self.buckets), 64 * WAYS)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(st.sampled_from([b"x", b"y", b"z"]), st.floats(0, 0.5)),
            max_size=60,
        ),
        st.floats(0.5, 20),
        st.integers(1, 5),
    )
    def test_agrees_with_the_local_store(
        self, steps: list[tuple[bytes, float]], rate: float, burst: int
    ) -> None:
        """While no set overflows, every answer is the local store's."""
        shared, _ = table()
        self.addCleanup(os.close, shared.fd)
        self.addCleanup(shared.close)
        local = LocalBuckets()
        now = 1000.0
        for key, pause in steps:
            now += pause
            ok, wait = shared.take(key, now, rate, burst)
            expected_ok, expected_wait = local.take(key, now, rate, burst)
            self.assertEqual(ok, expected_ok)
            self.assertAlmostEqual(wait, expected_wait, places=6)
