"""Tests for L{txlb.registry} and L{txlb.policy}."""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.config import Address, BackendConfig
from txlb.policy import least_conn, round_robin
from txlb.registry import Lease, Registry


def backends(*weights: float) -> list[BackendConfig]:
    return [
        BackendConfig(f"b{i}", Address("127.0.0.1", 9000 + i), w)
        for i, w in enumerate(weights)
    ]


def registry(*weights: float, algorithm: str = "least_conn") -> Registry:
    return Registry(backends(*weights), Clock(), algorithm)


class LeastConnTests(SynchronousTestCase):
    def test_fewest_active_wins(self) -> None:
        """The backend with the fewest active requests is chosen."""
        r = registry(1, 1, 1)
        held = [r.acquire(), r.acquire(), r.acquire()]
        assert all(held)
        held[1].release()  # type: ignore[union-attr]
        lease = r.acquire()
        assert lease is not None
        self.assertIs(lease.backend, r.backends[1])

    def test_sequential_requests_spread(self) -> None:
        """On an idle balancer, sequential requests visit every backend in turn."""
        r = registry(1, 1, 1)
        names = []
        for _ in range(9):
            lease = r.acquire()
            assert lease is not None
            names.append(lease.backend.name)
            lease.release()
        self.assertEqual(names, ["b0", "b1", "b2"] * 3)

    def test_weights_on_idle_balancer(self) -> None:
        """Sequential requests split in proportion to the weights."""
        r = registry(3, 1)
        seen: Counter[str] = Counter()
        for _ in range(400):
            lease = r.acquire()
            assert lease is not None
            seen[lease.backend.name] += 1
            lease.release()
        self.assertEqual(seen, {"b0": 300, "b1": 100})

    def test_weighted_least_connections(self) -> None:
        """Concurrent load settles at active counts proportional to weight."""
        r = registry(2, 1)
        for _ in range(30):
            self.assertIsNotNone(r.acquire())
        self.assertEqual([b.active for b in r.backends], [20, 10])

    def test_unhealthy_excluded_and_none_left(self) -> None:
        """Unhealthy backends get nothing; with none healthy acquire is None."""
        r = registry(1, 1)
        r.set_healthy(r.backends[0], False, "test")
        for _ in range(3):
            lease = r.acquire()
            assert lease is not None
            self.assertIs(lease.backend, r.backends[1])
        r.set_healthy(r.backends[1], False, "test")
        self.assertIsNone(r.acquire())

    def test_exclude(self) -> None:
        """Backends already tried are not picked again."""
        r = registry(1, 1)
        lease = r.acquire(exclude=[r.backends[0]])
        assert lease is not None
        self.assertIs(lease.backend, r.backends[1])
        self.assertIsNone(r.acquire(exclude=r.backends))

    def test_history_records_reason_and_time(self) -> None:
        """A health change is kept with its time and cause."""
        clock = Clock()
        r = Registry(backends(1), clock)
        clock.advance(5)
        r.set_healthy(r.backends[0], False, "3/3 probes timed out")
        last = r.backends[0].history[-1]
        self.assertEqual(
            (last.time, last.healthy, last.reason), (5, False, "3/3 probes timed out")
        )
        self.assertEqual(r.snapshot()["backends"][0]["state"], "unhealthy")

    def test_round_robin(self) -> None:
        """round_robin ignores load and rotates."""
        r = registry(1, 1, algorithm="round_robin")
        held = [r.acquire() for _ in range(4)]
        self.assertEqual([h.backend.name for h in held if h], ["b0", "b1", "b0", "b1"])

    def test_policies_are_pure(self) -> None:
        """A policy reads its candidates and changes nothing."""
        r = registry(1, 2, 1)
        before = [(b.active, b.weight, b.vtime) for b in r.backends]
        least_conn(r.backends)
        round_robin(r.backends)
        self.assertEqual(before, [(b.active, b.weight, b.vtime) for b in r.backends])


class LeaseTests(SynchronousTestCase):
    def test_release_once(self) -> None:
        """A lease lowers the count once, however often it is released."""
        r = registry(1)
        lease = r.acquire()
        assert lease is not None
        self.assertEqual(r.backends[0].active, 1)
        self.assertTrue(lease.release(failed=True))
        self.assertFalse(lease.release(failed=True))
        self.assertFalse(lease.release())
        self.assertEqual(r.backends[0].active, 0)
        self.assertEqual(r.backends[0].failures, 1)
        self.assertEqual(r.backends[0].total_requests, 1)

    def test_snapshot_counts(self) -> None:
        """The snapshot shows active and total counts and totals."""
        r = registry(1, 1)
        r.acquire()
        snap = r.snapshot()
        self.assertEqual(snap["algorithm"], "least_conn")
        self.assertEqual(
            [
                (b["name"], b["active_connections"], b["total_requests"])
                for b in snap["backends"]
            ],
            [("b0", 1, 1), ("b1", 0, 0)],
        )
        self.assertEqual(snap["totals"]["active_connections"], 1)


class LeaseMachine(RuleBasedStateMachine):
    """Random acquires, releases (repeated), health flips: counts never leak."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = registry(1, 2, 3)
        self.leases: list[Lease] = []

    @rule()
    def acquire(self) -> None:
        lease = self.registry.acquire()
        if lease is not None:
            self.leases.append(lease)

    @precondition(lambda self: self.leases)
    @rule(index=st.integers(min_value=0), failed=st.booleans())
    def release(self, index: int, failed: bool) -> None:
        self.leases[index % len(self.leases)].release(failed=failed)

    @rule(index=st.integers(min_value=0, max_value=2), healthy=st.booleans())
    def flip_health(self, index: int, healthy: bool) -> None:
        self.registry.set_healthy(self.registry.backends[index], healthy, "test")

    @invariant()
    def counts_match_open_leases(self) -> None:
        for backend in self.registry.backends:
            open_leases = sum(
                1
                for lease in self.leases
                if lease.backend is backend and not lease.released
            )
            assert backend.active == open_leases >= 0
            assert backend.total_requests == sum(
                1 for lease in self.leases if lease.backend is backend
            )


class LeaseMachineTests(SynchronousTestCase):
    def test_counts_never_leak(self) -> None:
        """Hypothesis: under any interleaving, active == open leases, never < 0."""
        LeaseMachine.TestCase.settings = settings(max_examples=150, deadline=None)
        LeaseMachine.TestCase().runTest()
