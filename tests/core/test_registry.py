"""Tests for L{txlb.registry} and L{txlb.policy}."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import registry_of
from txlb.config import Address, BackendConfig, HealthConfig, OutlierConfig
from txlb.core import selector as selector_module
from txlb.core.policies import LeastConn, RoundRobin
from txlb.core.queue import QUEUE_TIMEOUT, Refusal, Waiter
from txlb.core.registry import Lease, Registry
from txlb.observe import view


class Callbacks:
    """A queue client that calls back: on a lease, and on a queue timeout."""

    def __init__(
        self, on_lease: Callable[[Lease], None], on_timeout: Callable[[], None]
    ) -> None:
        self.on_lease = on_lease
        self.on_timeout = on_timeout

    def leased(self, lease: Lease) -> None:
        self.on_lease(lease)

    def refused(self, refusal: Refusal) -> None:
        if refusal is QUEUE_TIMEOUT:
            self.on_timeout()


def wait(
    registry: Registry,
    exclude: Any,
    on_lease: Callable[[Lease], None],
    on_timeout: Callable[[], None],
) -> Waiter | None:
    """Queue for a lease when every backend C{exclude} allows is full."""
    return registry.queue.lease_or_wait(Callbacks(on_lease, on_timeout), exclude)


def backends(*weights: float) -> list[BackendConfig]:
    return [
        BackendConfig(f"b{i}", Address("127.0.0.1", 9000 + i), w)
        for i, w in enumerate(weights)
    ]


def registry(*weights: float, algorithm: str = "least_conn") -> Registry:
    return registry_of(backends(*weights), Clock(), algorithm)


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
        r = registry_of(backends(1), clock)
        clock.advance(5)
        r.set_healthy(r.backends[0], False, "3/3 probes timed out")
        last = r.backends[0].history[-1]
        self.assertEqual(
            (last.time, last.healthy, last.reason), (5, False, "3/3 probes timed out")
        )
        self.assertEqual(view.snapshot(r, 0.0)["backends"][0]["state"], "unhealthy")

    def test_round_robin(self) -> None:
        """round_robin ignores load and rotates."""
        r = registry(1, 1, algorithm="round_robin")
        held = [r.acquire() for _ in range(4)]
        self.assertEqual([h.backend.name for h in held if h], ["b0", "b1", "b0", "b1"])

    def test_policies_are_pure(self) -> None:
        """A policy reads its candidates and changes nothing."""
        r = registry(1, 2, 1)
        before = [(b.active, b.weight, b.vtime) for b in r.backends]
        LeastConn().pick(r.backends)
        RoundRobin().pick(r.backends)
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
        snap = view.snapshot(r, 0.0)
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


def stateful(
    n: int = 3, slow_start: float = 0.0, panic: int = 0, **outlier: Any
) -> tuple[Registry, Clock]:
    clock = Clock()
    health = HealthConfig(slow_start=slow_start)
    configs = [
        BackendConfig(f"b{i}", Address("127.0.0.1", 9000 + i), 1.0, health)
        for i in range(n)
    ]
    settings = {"consecutive_failures": 3, "base_ejection_time": 10.0}
    settings.update(outlier)
    return (
        registry_of(
            configs, clock, outlier=OutlierConfig(**settings), panic_threshold=panic
        ),
        clock,
    )


def fail(registry: Registry, backend_index: int, times: int, why: str = "502") -> None:
    backend = registry.backends[backend_index]
    for _ in range(times):
        lease = registry.acquire(
            exclude=[b for b in registry.backends if b is not backend]
        )
        assert lease is not None and lease.backend is backend
        lease.release(failed=True, why=why)


class OutlierTests(SynchronousTestCase):
    def test_consecutive_failures_eject(self) -> None:
        """N consecutive failures eject a backend for the base time, with the
        cause in words; it then comes back."""
        r, clock = stateful()
        fail(r, 0, 2)
        self.assertEqual(r.backends[0].state, "healthy")
        fail(r, 0, 1, why="answered 500")
        self.assertEqual(r.backends[0].state, "ejected")
        self.assertEqual(
            r.backends[0].history[-1].reason,
            "3 consecutive failures (last: answered 500); ejected for 10s",
        )
        picked = {r.acquire().backend.name for _ in range(10)}  # type: ignore[union-attr]
        self.assertNotIn("b0", picked)
        clock.advance(10)
        self.assertEqual(r.backends[0].state, "healthy")
        self.assertEqual(r.backends[0].history[-1].reason, "ejection time over")

    def test_success_resets_the_streak(self) -> None:
        """A success between failures resets the count."""
        r, _ = stateful()
        fail(r, 0, 2)
        lease = r.acquire(exclude=r.backends[1:])
        assert lease is not None
        lease.release()
        fail(r, 0, 2)
        self.assertEqual(r.backends[0].state, "healthy")

    def test_repeat_ejections_grow(self) -> None:
        """Each repeat ejection lasts longer, up to max_ejection_time."""
        r, clock = stateful(max_ejection_time=25.0)
        durations = []
        for _ in range(3):
            fail(r, 0, 3)
            durations.append(r.backends[0].history[-1].reason.rsplit(" ", 1)[1])
            clock.advance(30)
        self.assertEqual(durations, ["10s", "20s", "25s"])

    def test_ejected_total_only_grows(self) -> None:
        """
        ejections, the repeat count, starts again after a quiet
        max_ejection_time; ejected_total (what /metrics exports as a
        counter) keeps counting every ejection.
        """
        r, clock = stateful(max_ejection_time=25.0)
        fail(r, 0, 3)
        clock.advance(30)
        fail(r, 0, 3)
        self.assertEqual((r.backends[0].ejections, r.backends[0].ejected_total), (2, 2))
        clock.advance(20)  # the second ejection is over
        clock.advance(26)  # and quiet for over max_ejection_time
        fail(r, 0, 3)
        self.assertEqual((r.backends[0].ejections, r.backends[0].ejected_total), (1, 3))

    def test_max_ejected_percent(self) -> None:
        """max_ejected_percent keeps backends in rotation; at least one may go."""
        r, _ = stateful(n=4, max_ejected_percent=50)
        for i in range(4):
            fail(r, i, 3)
        self.assertEqual(
            [b.state for b in r.backends], ["ejected", "ejected", "healthy", "healthy"]
        )
        r, _ = stateful(n=3, max_ejected_percent=10)
        fail(r, 0, 3)
        fail(r, 1, 3)
        self.assertEqual(
            [b.state for b in r.backends], ["ejected", "healthy", "healthy"]
        )
        r, _ = stateful(n=3, max_ejected_percent=0)
        fail(r, 0, 5)
        self.assertEqual(r.backends[0].state, "healthy")

    def test_ejection_kept_on_the_backend(self) -> None:
        """
        A passive ejection in force is on the backend (until when, why, by
        this balancer: no peer), and gone when it ends.
        """
        r, clock = stateful()
        clock.advance(100)
        fail(r, 0, 3, why="answered 500")
        ejection = r.backends[0].ejection
        assert ejection is not None
        self.assertEqual((ejection.until, ejection.by), (110.0, ""))
        self.assertIn("3 consecutive failures", ejection.cause)
        clock.advance(10)
        self.assertIsNone(r.backends[0].ejection)

    def test_eject_by_peer(self) -> None:
        """
        A peer's word ejects a backend for the time given, recorded with the
        peer's name and cause; it comes back when that time is over.
        """
        r, clock = stateful()
        b0 = r.backends[0]
        self.assertTrue(r.eject_by_peer(b0, 7.5, "lb-b", "5 consecutive failures"))
        self.assertEqual(b0.state, "ejected")
        self.assertEqual(
            b0.history[-1].reason, "ejected by peer lb-b: 5 consecutive failures"
        )
        self.assertEqual(b0.ejection.by, "lb-b")  # type: ignore[union-attr]
        picked = {r.acquire().backend.name for _ in range(10)}  # type: ignore[union-attr]
        self.assertNotIn("b0", picked)
        self.assertEqual(b0.ejections, 0)  # not one of this balancer's own
        clock.advance(7.4)
        self.assertEqual(b0.state, "ejected")
        clock.advance(0.1)
        self.assertEqual(b0.state, "healthy")
        self.assertEqual(b0.history[-1].reason, "ejection time over")

    def test_eject_by_peer_refusals(self) -> None:
        """
        A peer's word does nothing to a backend ejected already or for no
        time, and keeps to max_ejected_percent like the passive checks.
        """
        r, _ = stateful(n=4, max_ejected_percent=50)
        fail(r, 0, 3)
        self.assertFalse(r.eject_by_peer(r.backends[0], 5, "lb-b", "x"))
        self.assertIn("consecutive", r.backends[0].history[-1].reason)
        self.assertFalse(r.eject_by_peer(r.backends[1], 0, "lb-b", "x"))
        self.assertTrue(r.eject_by_peer(r.backends[1], 5, "lb-b", "x"))
        self.assertFalse(r.eject_by_peer(r.backends[2], 5, "lb-b", "x"))
        self.assertEqual(
            [b.state for b in r.backends], ["ejected", "ejected", "healthy", "healthy"]
        )

    def test_disabled(self) -> None:
        """consecutive_failures = 0 turns passive ejection off."""
        r, _ = stateful(consecutive_failures=0)
        fail(r, 0, 20)
        self.assertEqual(r.backends[0].state, "healthy")
        self.assertEqual(r.backends[0].failures, 20)


class SlowStartTests(SynchronousTestCase):
    def test_recovered_backend_ramps_up(self) -> None:
        """A backend coming back starts near weight 0 and reaches its weight
        after slow_start seconds; meanwhile it is 'starting'."""
        r, clock = stateful(n=2, slow_start=10)
        b0 = r.backends[0]
        r.set_healthy(b0, False, "down")
        r.set_healthy(b0, True, "up")
        self.assertEqual(b0.state, "starting")
        self.assertAlmostEqual(b0.weight, 0.05)
        clock.advance(5)
        r.acquire()
        self.assertAlmostEqual(b0.weight, 0.5)
        clock.advance(5)
        r.acquire()
        self.assertEqual((b0.weight, b0.state), (1.0, "healthy"))
        self.assertEqual(b0.history[-1].reason, "slow start over after 10s")

    def test_ramping_backend_gets_a_small_share(self) -> None:
        """Early in slow start a recovered backend gets few of the requests."""
        r, clock = stateful(n=2, slow_start=100)
        r.set_healthy(r.backends[0], False, "down")
        r.set_healthy(r.backends[0], True, "up")
        clock.advance(10)  # 10% of its weight
        seen: Counter[str] = Counter()
        for _ in range(1100):
            lease = r.acquire()
            assert lease is not None
            seen[lease.backend.name] += 1
            lease.release()
        self.assertEqual(seen["b0"], 100)

    def test_first_probe_does_not_ramp(self) -> None:
        """A backend that starts healthy is not slowed at start-up."""
        r, _ = stateful(n=1, slow_start=10)
        self.assertEqual(r.backends[0].state, "healthy")
        self.assertEqual(r.backends[0].weight, 1.0)


class PanicAndDrainTests(SynchronousTestCase):
    def test_panic_threshold(self) -> None:
        """Below panic_threshold healthy, all backends take traffic again."""
        r, _ = stateful(n=4, panic=50)
        r.set_healthy(r.backends[0], False, "down")
        self.assertFalse(r.panic)
        r.set_healthy(r.backends[1], False, "down")
        self.assertFalse(r.panic)  # 2 of 4 is not below 50%
        r.set_healthy(r.backends[2], False, "down")
        self.assertTrue(r.panic)
        picked = {r.acquire().backend.name for _ in range(8)}  # type: ignore[union-attr]
        self.assertEqual(picked, {"b0", "b1", "b2", "b3"})
        self.assertTrue(view.snapshot(r, 0.0)["totals"]["panic"])

    def test_all_down_without_panic(self) -> None:
        """With no panic threshold and nobody healthy, nothing is chosen."""
        r, _ = stateful(n=2)
        for b in r.backends:
            r.set_healthy(b, False, "down")
        self.assertIsNone(r.acquire())

    def test_draining(self) -> None:
        """A draining backend gets no new requests; in-flight ones finish."""
        r, _ = stateful(n=2)
        held = r.acquire()
        assert held is not None and held.backend.name == "b0"
        r.set_draining(r.backends[0], True, "admin")
        self.assertEqual(r.backends[0].state, "draining")
        for _ in range(4):
            lease = r.acquire()
            assert lease is not None
            self.assertEqual(lease.backend.name, "b1")
            lease.release()
        held.release()
        self.assertEqual(r.backends[0].active, 0)


class IndexTwins(RuleBasedStateMachine):
    """
    Two registries of 6 backends given the same random operations: one
    selects through the heap index (its threshold lowered so that it is
    used), its twin by scanning with the pure policy.  They must pick the
    same backend every time, also when some are at their max_connections.
    """

    size = 6

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        configs = [
            BackendConfig(
                f"b{i}",
                Address("127.0.0.1", 9000 + i),
                float(1 + i % 3),
                HealthConfig(slow_start=5.0),
                max_connections=i % 4,
            )
            for i in range(self.size)
        ]
        self.indexed = registry_of(configs, self.clock)
        self.scanned = registry_of(configs, self.clock)
        self.scanned.selector.index = None
        self.scanned.selector.rotate(self.scanned.backends)
        assert self.indexed.selector.indexed and not self.scanned.selector.indexed
        self.leases: list[tuple[Lease, Lease]] = []

    def both(self, index: int) -> tuple[Any, Any]:
        return self.indexed.backends[index], self.scanned.backends[index]

    @rule(excluded=st.sets(st.integers(min_value=0, max_value=5), max_size=5))
    def acquire(self, excluded: set[int]) -> None:
        a = self.indexed.acquire([self.indexed.backends[i] for i in excluded])
        b = self.scanned.acquire([self.scanned.backends[i] for i in excluded])
        assert (a and a.backend.name) == (b and b.backend.name)
        if a and b:
            self.leases.append((a, b))

    @precondition(lambda self: self.leases)
    @rule(index=st.integers(min_value=0))
    def release(self, index: int) -> None:
        for lease in self.leases.pop(index % len(self.leases)):
            lease.release()

    @rule(index=st.integers(min_value=0, max_value=5), healthy=st.booleans())
    def health(self, index: int, healthy: bool) -> None:
        for registry, backend in zip(
            (self.indexed, self.scanned), self.both(index), strict=True
        ):
            registry.set_healthy(backend, healthy, "test")

    @rule(index=st.integers(min_value=0, max_value=5), weight=st.integers(1, 5))
    def weight(self, index: int, weight: int) -> None:
        for registry, backend in zip(
            (self.indexed, self.scanned), self.both(index), strict=True
        ):
            registry.set_weight(backend, float(weight), "test")

    @rule(index=st.integers(min_value=0, max_value=5), limit=st.integers(0, 3))
    def limit(self, index: int, limit: int) -> None:
        for registry, backend in zip(
            (self.indexed, self.scanned), self.both(index), strict=True
        ):
            registry.set_max_connections(backend, limit, "test")

    @invariant()
    def agree_on_full(self) -> None:
        assert self.indexed.full() == self.scanned.full()

    @rule(index=st.integers(min_value=0, max_value=5), draining=st.booleans())
    def drain(self, index: int, draining: bool) -> None:
        for registry, backend in zip(
            (self.indexed, self.scanned), self.both(index), strict=True
        ):
            registry.set_draining(backend, draining, "test")

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)


class IndexTests(SynchronousTestCase):
    def test_index_picks_as_the_policy(self) -> None:
        """Hypothesis: the heap index and the pure policy always agree."""
        self.patch(selector_module, "INDEX_ABOVE", 1)
        IndexTwins.TestCase.settings = settings(
            max_examples=200, stateful_step_count=60, deadline=None
        )
        IndexTwins.TestCase().runTest()

    def test_index_stays_small(self) -> None:
        """Stale heap entries are dropped: the heap stays O(backends)."""
        configs = [BackendConfig(f"b{i}", Address("h", i + 1)) for i in range(100)]
        registry = registry_of(configs, Clock())
        for _ in range(10_000):
            lease = registry.acquire()
            assert lease is not None
            lease.release()
        assert registry.selector.index is not None
        self.assertLess(len(registry.selector.index._heap), 2 * 100 + 64 + 1)


class LeastTimeTests(SynchronousTestCase):
    def setup(self, n: int = 3, decay: float = 10.0) -> tuple[Registry, Clock]:
        clock = Clock()
        configs = [BackendConfig(f"b{i}", Address("h", i + 1)) for i in range(n)]
        return registry_of(configs, clock, "least_time", ewma_decay=decay), clock

    def sample(self, r: Registry, index: int, seconds: float) -> None:
        backend = r.backends[index]
        lease = r.acquire(exclude=[b for b in r.backends if b is not backend])
        assert lease is not None
        lease.release(seconds=seconds)

    def test_without_latencies_it_is_least_connections(self) -> None:
        """With no latency yet (or in TCP mode) least_time picks by load and
        rotates ties, like least_conn."""
        r, _ = self.setup()
        held = [r.acquire() for _ in range(3)]
        self.assertEqual([h.backend.name for h in held if h], ["b0", "b1", "b2"])
        held[1].release()  # type: ignore[union-attr]
        lease = r.acquire()
        assert lease is not None
        self.assertEqual(lease.backend.name, "b1")

    def test_expected_wait_decides(self) -> None:
        """A slow backend with no queue loses to a fast one with a queue
        until the fast one's queue costs more than the slow one's latency."""
        r, _ = self.setup(n=2)
        self.sample(r, 0, 0.005)
        self.sample(r, 1, 0.080)
        names = [p.backend.name for p in (r.acquire() for _ in range(16)) if p]
        # 5 ms x (n + 1) stays below 80 ms x 1 up to 15 active.
        self.assertEqual(names[:15], ["b0"] * 15)
        self.assertEqual(names[15], "b1")

    def test_samples_are_per_request_at_load(self) -> None:
        """A latency is divided by the requests in flight when it was sent
        (Little's law): 4 requests sharing a backend that took 40 ms each
        mean 10 ms per request at that load."""
        r, _ = self.setup(n=1)
        leases = [r.acquire() for _ in range(4)]
        leases[-1].release(seconds=0.040)  # type: ignore[union-attr]
        self.assertAlmostEqual(r.backends[0].latency_ewma, 0.010)

    def test_average_weighted_by_age(self) -> None:
        """A new sample weighs by the time since the last one over the time
        constant: after 5 s of a 10 s constant, exp(-0.5) stays."""
        r, clock = self.setup(n=1, decay=10.0)
        self.sample(r, 0, 0.100)
        clock.advance(5)
        self.sample(r, 0, 0.0)
        self.assertAlmostEqual(
            r.backends[0].latency_ewma, 0.100 * math.exp(-0.5), places=6
        )

    def test_idle_estimate_fades(self) -> None:
        """A backend with no recent sample looks faster and faster, so it is
        tried again instead of being starved."""
        r, clock = self.setup(n=2, decay=10.0)
        self.sample(r, 0, 0.010)
        self.sample(r, 1, 0.200)
        for _ in range(3):
            lease = r.acquire()
            assert lease is not None and lease.backend.name == "b0"
            lease.release()  # no latency: a client that left
        clock.advance(30)
        self.sample(r, 0, 0.010)
        lease = r.acquire()
        assert lease is not None
        self.assertAlmostEqual(r.backends[1].latency, 0.200 * math.exp(-3), places=6)
        self.assertEqual(lease.backend.name, "b1")

    def test_decisions_explain_expected_wait(self) -> None:
        """The decision log explains a least_time choice by expected wait."""
        r, clock = self.setup(n=2)
        clock.advance(1)
        self.sample(r, 0, 0.004)
        clock.advance(1)
        r.acquire()
        reason = r.decisions.describe(1)[0]["reason"]
        self.assertIn("b1 had the shortest expected wait of 2 candidates", reason)
        self.assertIn("latency 0 ms x (0 active + 1)", reason)


def limited(
    *limits: int,
    algorithm: str = "least_conn",
    queue_size: int = 1024,
    queue_timeout: float = 5.0,
) -> tuple[Registry, Clock]:
    """A registry of one backend per limit (0: unlimited), and its clock."""
    clock = Clock()
    configs = [
        BackendConfig(f"b{i}", Address("127.0.0.1", 9000 + i), max_connections=n)
        for i, n in enumerate(limits)
    ]
    return (
        registry_of(
            configs,
            clock,
            algorithm,
            queue_size=queue_size,
            queue_timeout=queue_timeout,
        ),
        clock,
    )


class Recorder:
    """Waiter callbacks that record what happened to each waiter."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.leases: dict[str, Lease] = {}

    def wait(self, registry: Registry, label: str, exclude: Any = ()) -> Waiter | None:
        def leased(lease: Lease) -> None:
            self.events.append(("lease", label, lease.backend.name))
            self.leases[label] = lease

        def timed_out() -> None:
            self.events.append(("timeout", label, ""))

        return wait(registry, exclude, leased, timed_out)


def fill(r: Registry) -> list[Lease]:
    """Acquire until acquire() gives nothing (at most 100 times); the leases."""
    leases = []
    while (lease := r.acquire()) is not None:
        leases.append(lease)
        assert len(leases) < 100, "max_connections is not enforced"
    return leases


class MaxConnectionsTests(SynchronousTestCase):
    def test_full_backend_is_no_candidate(self) -> None:
        """
        With every algorithm, a backend at max_connections is passed over;
        when all are full, acquire is None and full() says to queue.
        """
        for algorithm in ("least_conn", "round_robin", "least_time"):
            r, _ = limited(1, 2, algorithm=algorithm)
            self.assertFalse(r.full())
            leases = fill(r)
            self.assertEqual(
                sorted(lease.backend.name for lease in leases),
                ["b0", "b1", "b1"],
                algorithm,
            )
            self.assertIsNone(r.acquire())
            self.assertTrue(r.full(), algorithm)
            leases[0].release()
            self.assertIsNotNone(r.acquire())

    def test_unlimited_never_full(self) -> None:
        """Without max_connections nothing is ever full: no queueing."""
        r, _ = limited(0, 0)
        for _ in range(50):
            self.assertIsNotNone(r.acquire())
        self.assertFalse(r.full())

    def test_full_only_for_usable_backends(self) -> None:
        """
        full() is false when the only full backends are excluded or out of
        rotation: no backend is there for the request (503, not a queue).
        """
        r, _ = limited(1, 1)
        b0, b1 = r.backends
        fill(r)
        self.assertTrue(r.full([b0]))
        self.assertFalse(r.full([b0, b1]))
        r.set_healthy(b0, False, "test")
        r.set_healthy(b1, False, "test")
        self.assertFalse(r.full())

    def test_unlimited_backend_takes_the_rest(self) -> None:
        """A full backend's share goes to the others, limited or not."""
        r, _ = limited(2, 0)
        names = Counter(
            lease.backend.name for lease in (r.acquire() for _ in range(10)) if lease
        )
        self.assertEqual(names, {"b0": 2, "b1": 8})


class QueueTests(SynchronousTestCase):
    def test_fifo(self) -> None:
        """Freed slots go to the waiters in the order they came."""
        r, _ = limited(1)
        (held,) = fill(r)
        rec = Recorder()
        for label in "abc":
            self.assertIsNotNone(rec.wait(r, label))
        self.assertEqual((len(r.queue), r.queue.total), (3, 3))
        held.release()
        rec.leases["a"].release()
        rec.leases["b"].release()
        self.assertEqual(
            rec.events,
            [("lease", "a", "b0"), ("lease", "b", "b0"), ("lease", "c", "b0")],
        )
        self.assertEqual(len(r.queue), 0)

    def test_lease_given_after_release_is_complete(self) -> None:
        """
        on_lease runs once the released lease is fully accounted: the
        backend's active count already dropped, and the new lease is on it.
        """
        r, _ = limited(1)
        (held,) = fill(r)
        b0 = r.backends[0]
        seen = []
        wait(r, (), lambda lease: seen.append((held.released, b0.active)), lambda: None)
        held.release()
        self.assertEqual(seen, [(True, 1)])

    def test_bound(self) -> None:
        """A full queue refuses at once (None) and counts the rejection."""
        r, _ = limited(1, queue_size=2)
        fill(r)
        rec = Recorder()
        self.assertIsNotNone(rec.wait(r, "a"))
        self.assertIsNotNone(rec.wait(r, "b"))
        self.assertIsNone(rec.wait(r, "c"))
        self.assertEqual((len(r.queue), r.queue.full_rejections), (2, 1))
        self.assertEqual(view.totals(r)["queue_full_rejections"], 1)

    def test_queue_size_zero(self) -> None:
        """queue_size = 0: nobody waits."""
        r, _ = limited(1, queue_size=0)
        fill(r)
        self.assertIsNone(Recorder().wait(r, "a"))
        self.assertEqual(
            (len(r.queue), r.queue.total, r.queue.full_rejections), (0, 0, 1)
        )

    def test_timeout(self) -> None:
        """After queue_timeout on the clock, on_timeout is called, once."""
        r, clock = limited(1, queue_timeout=2.0)
        (held,) = fill(r)
        rec = Recorder()
        rec.wait(r, "a")
        clock.advance(1.0)
        rec.wait(r, "b")
        clock.advance(0.999)
        self.assertEqual(rec.events, [])
        clock.advance(0.001)
        self.assertEqual(rec.events, [("timeout", "a", "")])
        self.assertEqual((len(r.queue), r.queue.timeouts), (1, 1))
        held.release()
        clock.advance(10)
        self.assertEqual(rec.events, [("timeout", "a", ""), ("lease", "b", "b0")])
        self.assertEqual(r.queue.timeouts, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_idempotent(self) -> None:
        """
        A cancelled waiter leaves the queue (its timer too) and gets
        nothing; cancelling again, or after it got a lease, does nothing.
        """
        r, clock = limited(1)
        (held,) = fill(r)
        rec = Recorder()
        a = rec.wait(r, "a")
        b = rec.wait(r, "b")
        assert a is not None and b is not None
        self.assertTrue(a.cancel())
        self.assertFalse(a.cancel())
        self.assertEqual(len(r.queue), 1)
        held.release()
        self.assertEqual(rec.events, [("lease", "b", "b0")])
        self.assertFalse(b.cancel())
        self.assertFalse(a.waiting or b.waiting)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(60)
        self.assertEqual(r.queue.timeouts, 0)

    def test_exclude_respected(self) -> None:
        """
        A waiter is never given a backend it excludes; a younger waiter
        that may use the freed backend gets it instead.
        """
        r, _ = limited(1, 1)
        b0, _ = r.backends
        leases = {lease.backend.name: lease for lease in fill(r)}
        rec = Recorder()
        rec.wait(r, "old", exclude=[b0])
        rec.wait(r, "young")
        leases["b0"].release()
        self.assertEqual(rec.events, [("lease", "young", "b0")])
        leases["b1"].release()
        self.assertEqual(rec.events[1], ("lease", "old", "b1"))
        self.assertIsNot(rec.leases["old"].backend, b0)

    def test_reentrant_release(self) -> None:
        """
        on_lease may release its lease at once (the request failed on the
        spot): the slot goes on to the next waiter, in order, and no count
        leaks.
        """
        r, _ = limited(1)
        (held,) = fill(r)
        order = []

        def quick(label: str) -> Any:
            def leased(lease: Lease) -> None:
                order.append(label)
                lease.release()
                order.append(label + " released")

            return leased

        for label in "abc":
            wait(r, (), quick(label), lambda: None)
        held.release()
        self.assertEqual(
            order, ["a", "a released", "b", "b released", "c", "c released"]
        )
        self.assertEqual((r.backends[0].active, len(r.queue)), (0, 0))
        self.assertEqual(r.backends[0].total_requests, 4)

    def test_reentrant_wait_and_cancel(self) -> None:
        """
        on_lease may cancel a younger waiter (it is skipped) or queue
        again (served by a later release).
        """
        r, _ = limited(1)
        (held,) = fill(r)
        rec = Recorder()
        waiters: dict[str, Any] = {}

        def leased(lease: Lease) -> None:
            rec.events.append(("lease", "a", lease.backend.name))
            waiters["b"].cancel()
            waiters["d"] = rec.wait(r, "d")
            lease.release()

        wait(r, (), leased, lambda: None)
        waiters["b"] = rec.wait(r, "b")
        rec.wait(r, "c")
        held.release()
        self.assertEqual(rec.events, [("lease", "a", "b0"), ("lease", "c", "b0")])
        rec.leases["c"].release()
        self.assertEqual(rec.events[-1], ("lease", "d", "b0"))
        rec.leases["d"].release()
        self.assertEqual((r.backends[0].active, len(r.queue)), (0, 0))

    def test_no_lease_leak(self) -> None:
        """Once every request is done, active and queued are back to 0."""
        r, clock = limited(2, 1, queue_timeout=1.0)
        held = fill(r)
        rec = Recorder()
        for i in range(6):
            rec.wait(r, str(i))
        for lease in held:
            lease.release()
        while any(not lease.released for lease in rec.leases.values()):
            for lease in list(rec.leases.values()):
                lease.release()
        clock.advance(1.0)
        served = [e for e in rec.events if e[0] == "lease"]
        self.assertEqual(len(served), 6)
        self.assertEqual([b.active for b in r.backends], [0, 0])
        self.assertEqual((len(r.queue), r.queue.timeouts), (0, 0))

    def test_raised_limit_serves_waiters(self) -> None:
        """
        Raising max_connections (a reload) serves as many waiters as now
        fit, in the next reactor turn; lowering it leaves leases out alone.
        """
        r, clock = limited(1)
        b0 = r.backends[0]
        fill(r)
        rec = Recorder()
        for label in "abc":
            rec.wait(r, label)
        r.set_max_connections(b0, 3, "reload")
        self.assertEqual(rec.events, [])
        clock.advance(0)
        self.assertEqual([e[1] for e in rec.events], ["a", "b"])
        self.assertEqual((b0.active, len(r.queue)), (3, 1))
        r.set_max_connections(b0, 1, "reload")
        self.assertEqual(b0.active, 3)
        self.assertIsNone(r.acquire())
        r.set_max_connections(b0, 0, "reload")
        clock.advance(0)
        self.assertEqual([e[1] for e in rec.events], ["a", "b", "c"])
        self.assertIn("max_connections 1 -> unlimited", b0.history[-1].reason)
        self.assertRaises(ValueError, r.set_max_connections, b0, -1, "test")

    def test_backend_back_serves_waiters(self) -> None:
        """A backend coming back in rotation takes waiters."""
        r, clock = limited(1, 1)
        b1 = r.backends[1]
        r.set_healthy(b1, False, "test")
        fill(r)
        rec = Recorder()
        rec.wait(r, "a")
        r.set_healthy(b1, True, "test")
        clock.advance(0)
        self.assertEqual(rec.events, [("lease", "a", "b1")])

    def test_waiting_without_backends_times_out(self) -> None:
        """Waiters whose backends all left rotation wait out their timeout."""
        r, clock = limited(1, queue_timeout=1.0)
        (held,) = fill(r)
        rec = Recorder()
        rec.wait(r, "a")
        r.set_healthy(r.backends[0], False, "test")
        held.release()
        clock.advance(1.0)
        self.assertEqual(rec.events, [("timeout", "a", "")])
        self.assertEqual(r.backends[0].active, 0)

    def test_configure_queue(self) -> None:
        """A reload resizes the queue; waiters already in keep their place."""
        r, clock = limited(1, queue_size=1, queue_timeout=1.0)
        fill(r)
        rec = Recorder()
        rec.wait(r, "a")
        r.queue.configure(2, 3.0)
        rec.wait(r, "b")
        self.assertIsNone(rec.wait(r, "c"))
        clock.advance(1.0)
        self.assertEqual(rec.events, [("timeout", "a", "")])
        clock.advance(2.0)
        self.assertEqual(rec.events[1], ("timeout", "b", ""))

    def test_totals_and_describe(self) -> None:
        """The queue's counters and each max_connections are in the data."""
        r, clock = limited(1, queue_size=1, queue_timeout=1.0)
        fill(r)
        rec = Recorder()
        rec.wait(r, "a")
        rec.wait(r, "b")
        totals = view.totals(r)
        self.assertEqual(
            [totals[k] for k in ("queued", "queue_size", "queued_total")], [1, 1, 1]
        )
        clock.advance(1.0)
        totals = view.snapshot(r, 0.0)["totals"]
        self.assertEqual(
            [totals[k] for k in ("queued", "queue_timeouts", "queue_full_rejections")],
            [0, 1, 1],
        )
        self.assertEqual(view.describe(r.backends[0])["max_connections"], 1)


class IndexedQueueTests(SynchronousTestCase):
    def test_heap_path(self) -> None:
        """
        Above 16 backends (the heap index), full backends are parked, not
        chosen; full() and the queue work as on the scan path, and the
        heap stays O(backends).
        """
        r, _ = limited(*([1] * 20), 0)
        assert r.selector.indexed and r.selector.index is not None
        unlimited = r.backends[-1]
        r.set_max_connections(unlimited, 2, "test")
        held = fill(r)
        self.assertEqual(len(held), 22)
        self.assertEqual(r.selector.index.parked, 21)
        self.assertTrue(r.full())
        self.assertTrue(r.full(r.backends[:20]))
        self.assertFalse(r.full(r.backends))
        rec = Recorder()
        rec.wait(r, "a", exclude=r.backends[:5])
        rec.wait(r, "b")
        held[0].release()  # on b0: "a" excludes it
        self.assertEqual(rec.events, [("lease", "b", held[0].backend.name)])
        target = next(lease for lease in held if lease.backend.name == "b7")
        target.release()
        self.assertEqual(rec.events[-1], ("lease", "a", "b7"))
        for lease in [*held, *rec.leases.values()]:
            lease.release()
        self.assertEqual(r.selector.index.parked, 0)
        self.assertEqual(sum(b.active for b in r.backends), 0)
        for _ in range(2000):
            leases = fill(r)
            for lease in leases:
                lease.release()
        self.assertLess(len(r.selector.index._heap), 2 * 21 + 64 + 1)


class QueueMachine(RuleBasedStateMachine):
    """
    Random acquires, waits, releases (some from on_lease itself), cancels,
    timeouts, health flips and limit changes: every lease is counted once,
    nothing waits while a backend it may use has room, and waiters are
    served in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.registry, self.clock = limited(1, 2, 0, queue_size=4, queue_timeout=3.0)
        self.registry.set_max_connections(self.registry.backends[2], 1, "test")
        self.leases: list[Lease] = []
        self.waiters: list[Any] = []
        self.served: list[int] = []
        self.count = 0

    def _wait(self, exclude: list[Any], quick: bool) -> None:
        number = self.count
        self.count += 1

        def leased(lease: Lease) -> None:
            assert lease.backend not in exclude
            # First come, first served: every older waiter still waiting
            # could not have used this backend.
            for older in self.waiters[:number]:
                if older is not None and older.waiting:
                    assert lease.backend in older.exclude, "an older waiter skipped"
            self.served.append(number)
            self.leases.append(lease)
            if quick:
                lease.release()

        # Indexed by number (None: refused, the queue was full).
        self.waiters.append(wait(self.registry, exclude, leased, lambda: None))

    @rule(skip=st.integers(min_value=-1, max_value=2), quick=st.booleans())
    def request(self, skip: int, quick: bool) -> None:
        exclude = [self.registry.backends[skip]] if skip >= 0 else []
        lease = self.registry.acquire(exclude)
        if lease is not None:
            self.leases.append(lease)
        elif self.registry.full(exclude):
            self._wait(exclude, quick)

    @precondition(lambda self: self.leases)
    @rule(index=st.integers(min_value=0))
    def release(self, index: int) -> None:
        self.leases[index % len(self.leases)].release()

    @precondition(lambda self: any(self.waiters))
    @rule(index=st.integers(min_value=0))
    def cancel(self, index: int) -> None:
        waiters = [w for w in self.waiters if w is not None]
        waiters[index % len(waiters)].cancel()

    @rule(index=st.integers(min_value=0, max_value=2), healthy=st.booleans())
    def flip_health(self, index: int, healthy: bool) -> None:
        self.registry.set_healthy(self.registry.backends[index], healthy, "test")

    @rule(index=st.integers(min_value=0, max_value=2), limit=st.integers(0, 3))
    def limit(self, index: int, limit: int) -> None:
        self.registry.set_max_connections(self.registry.backends[index], limit, "test")

    @rule(seconds=st.sampled_from([0, 0.5, 2.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def counts_match_open_leases(self) -> None:
        r = self.registry
        for backend in r.backends:
            open_leases = sum(
                1
                for lease in self.leases
                if lease.backend is backend and not lease.released
            )
            assert backend.active == open_leases >= 0
        assert len(r.queue) == sum(1 for w in self.waiters if w and w.waiting) <= 4

    @invariant()
    def nobody_waits_beside_room(self) -> None:
        # Between steps (after the deferred serving ran), no waiter waits
        # while a backend it may use has room.
        if self.clock.getDelayedCalls() and any(
            call.getTime() <= self.clock.seconds()
            for call in self.clock.getDelayedCalls()
        ):
            return
        r = self.registry
        for w in self.waiters:
            if w is not None and w.waiting:
                assert not any(
                    not b.full and b not in w.exclude for b in r.selector.available
                ), "a waiter waits while a backend it may use has room"


class QueueMachineTests(SynchronousTestCase):
    def test_queue_never_leaks(self) -> None:
        """Hypothesis: the queue never leaks a lease and never idles beside room."""
        QueueMachine.TestCase.settings = settings(
            max_examples=200, stateful_step_count=50, deadline=None
        )
        QueueMachine.TestCase().runTest()
