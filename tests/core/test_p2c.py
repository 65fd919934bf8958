"""Tests for L{txlb.core.p2c}: power of two random choices."""

from __future__ import annotations

from collections import Counter
from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import registry_of
from txlb.config import Address, BackendConfig
from txlb.core.p2c import DRAWS, PowerOfTwoChoices
from txlb.core.registry import Lease, Registry
from txlb.core.selector import ChoosingSelector


def specs(n: int, weights: list[float] | None = None) -> list[BackendConfig]:
    return [
        BackendConfig(
            f"b{i}", Address("127.0.0.1", 9000 + i), weights[i] if weights else 1.0
        )
        for i in range(n)
    ]


class CountingRandom:
    """A seeded random source that counts its draws."""

    def __init__(self, seed: int) -> None:
        self._random = Random(seed).random
        self.draws = 0

    def __call__(self) -> float:
        self.draws += 1
        return self._random()


def p2c(n: int, seed: int = 1, **kw: object) -> tuple[Registry, CountingRandom]:
    source = CountingRandom(seed)
    registry = registry_of(specs(n), Clock(), "p2c", random=source, **kw)  # type: ignore[arg-type]
    return registry, source


def drawn(registry: Registry) -> tuple[list[str], int]:
    """The candidates of the last p2c choice, and the winner's place."""
    policy = registry.policy
    assert isinstance(policy, PowerOfTwoChoices)
    candidates, index, _ = policy.explained()
    return [c.name for c in candidates], index


class PowerOfTwoTests(SynchronousTestCase):
    def test_chooser_selector(self) -> None:
        """p2c is driven by the choosing selector, and is no heap policy."""
        registry, _ = p2c(40)
        self.assertIsInstance(registry.selector, ChoosingSelector)
        self.assertFalse(registry.selector.indexed)

    def test_two_draws_per_pick_at_any_size(self) -> None:
        """O(1): a pick draws exactly two random numbers, with 3 or 1000 backends."""
        for n in (3, 1000):
            registry, source = p2c(n)
            for _ in range(200):
                lease = registry.acquire()
                assert lease is not None
            self.assertEqual(source.draws, 400, n)

    def test_the_less_loaded_of_the_two_wins(self) -> None:
        """Of the two drawn, the one with fewer requests in flight wins."""
        registry, _ = p2c(4)
        held = [registry.acquire() for _ in range(3)]
        assert all(held)
        for _ in range(50):
            lease = registry.acquire()
            assert lease is not None
            names, index = drawn(registry)
            loads = {b.name: b.active - (b is lease.backend) for b in registry.backends}
            other = names[1 - index]
            self.assertLessEqual(loads[names[index]], loads[other])
            lease.release()

    def test_same_seed_same_choices(self) -> None:
        """The random source is injected: one seed, one sequence of choices."""

        def run() -> list[str]:
            registry, _ = p2c(50, seed=7)
            out = []
            for _ in range(30):
                lease = registry.acquire()
                assert lease is not None
                out.append(lease.backend.name)
            return out

        self.assertEqual(run(), run())

    def test_excluded_and_full_backends_are_never_chosen(self) -> None:
        """A retry never goes back, a full backend is passed over, with redraws."""
        registry = registry_of(
            [
                BackendConfig(
                    f"b{i}", Address("127.0.0.1", 9000 + i), max_connections=1
                )
                for i in range(6)
            ],
            Clock(),
            "p2c",
        )
        backends = registry.backends
        exclude = backends[:2]
        leases = []
        for _ in range(4):
            lease = registry.acquire(exclude)
            assert lease is not None
            self.assertNotIn(lease.backend, exclude)
            leases.append(lease)
        self.assertEqual(
            sorted(lease.backend.name for lease in leases), ["b2", "b3", "b4", "b5"]
        )
        self.assertIsNone(registry.acquire(exclude))

    def test_one_usable_backend_is_found_by_a_scan(self) -> None:
        """When the draws keep missing, the scan finds the only usable one."""
        registry, source = p2c(1000)
        exclude = set(registry.backends[:-1])
        lease = registry.acquire(exclude)
        assert lease is not None
        self.assertEqual(lease.backend.name, "b999")
        self.assertLessEqual(source.draws, DRAWS + 1)

    def test_spread_follows_weights_when_idle(self) -> None:
        """Sequential picks (each released) spread in proportion to the weights."""
        registry = registry_of(specs(3, [1.0, 2.0, 3.0]), Clock(), "p2c")
        counts: Counter[str] = Counter()
        for _ in range(6000):
            lease = registry.acquire()
            assert lease is not None
            counts[lease.backend.name] += 1
            lease.release()
        for name, weight in (("b0", 1), ("b1", 2), ("b2", 3)):
            self.assertLess(abs(counts[name] / 6000 - weight / 6), 0.05, counts)

    def test_decision_explained(self) -> None:
        """The decision log says what p2c drew and why the winner won."""
        registry, _ = p2c(20)
        held = registry.acquire()
        assert held is not None
        lease = registry.acquire()
        assert lease is not None
        decision = registry.decisions.describe(1)[0]
        self.assertEqual(decision["algorithm"], "p2c")
        self.assertEqual(decision["candidates_total"], 2)
        self.assertIn("p2c drew 2 of 20 backends at random", decision["reason"])
        self.assertEqual(decision["detail"], {"pool": 20, "scanned": False})


@st.composite
def pools(draw: st.DrawFn) -> tuple[list[int], list[float], int, int]:
    n = draw(st.integers(2, 30))
    loads = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    weights = draw(
        st.lists(st.sampled_from([0.5, 1.0, 2.0, 5.0]), min_size=n, max_size=n)
    )
    return loads, weights, draw(st.integers(0, 2**32)), draw(st.integers(1, 20))


class PowerOfTwoProperties(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(pools())
    def test_never_the_worse_of_its_two(
        self, pool: tuple[list[int], list[float], int, int]
    ) -> None:
        """Whatever the loads and weights, the winner's load per weight is the
        lower of the two drawn (the smaller virtual time on a tie)."""
        loads, weights, seed, picks = pool
        registry = registry_of(
            specs(len(loads), weights), Clock(), "p2c", random=Random(seed).random
        )
        for backend, load in zip(registry.backends, loads, strict=True):
            backend.others = load
        held: list[Lease] = []
        for _ in range(picks):
            before = {b.name: (b.load / b.weight, b.vtime) for b in registry.backends}
            lease = registry.acquire()
            assert lease is not None
            names, index = drawn(registry)
            self.assertEqual(len(set(names)), len(names))
            winner, other = names[index], names[1 - index]
            self.assertEqual(winner, lease.backend.name)
            self.assertLessEqual(before[winner], before[other])
            held.append(lease)
