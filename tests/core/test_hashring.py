"""Tests for L{txlb.core.hashring}: consistent hashing with bounded loads."""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import registry_of
from txlb.config import Address, BackendConfig
from txlb.core.hashring import ConsistentHash
from txlb.core.registry import Lease, Registry
from txlb.core.ring import POINTS, Ring, position
from txlb.requestkey import RequestKey

KEYS = [b"user-%d" % i for i in range(10_000)]


def specs(weights: list[float]) -> list[BackendConfig]:
    return [
        BackendConfig(f"b{i}", Address("127.0.0.1", 9000 + i), w)
        for i, w in enumerate(weights)
    ]


def hashing(weights: list[float], factor: float = 1.25, **kw: object) -> Registry:
    return registry_of(
        specs(weights),
        Clock(),
        "hash",
        hash_balance_factor=factor,
        **kw,  # type: ignore[arg-type]
    )


def owners(registry: Registry, keys: list[bytes] = KEYS) -> dict[bytes, str]:
    """Where each key goes on an idle balancer (each lease released at once)."""
    found = {}
    for key in keys:
        lease = registry.acquire(key=key)
        assert lease is not None
        found[key] = lease.backend.name
        lease.release()
    return found


def ring_of(registry: Registry) -> ConsistentHash:
    policy = registry.policy
    assert isinstance(policy, ConsistentHash)
    return policy


class RingTests(SynchronousTestCase):
    def test_same_ring_whatever_the_order(self) -> None:
        """The ring depends on the names and weights only, not on their order."""
        members = [(f"b{i}", f"b{i}", 1.0 + i % 3) for i in range(7)]
        one: Ring[str] = Ring()
        one.build(members)
        other: Ring[str] = Ring()
        other.build(list(reversed(members)))
        self.assertEqual(
            [p & ~0xFFFF for p in one.points], [p & ~0xFFFF for p in other.points]
        )
        self.assertEqual(one.owners, other.owners)
        self.assertEqual(len(one.points), POINTS * sum(1.0 + i % 3 for i in range(7)))

    def test_shares_follow_weights(self) -> None:
        """Each backend's part of the ring is close to its part of the weight."""
        registry = hashing([1.0, 2.0, 3.0, 2.0])
        shares = ring_of(registry).key_shares
        self.assertAlmostEqual(sum(shares.values()), 1.0, places=9)
        for name, weight in (("b0", 1), ("b1", 2), ("b2", 3), ("b3", 2)):
            self.assertLess(abs(shares[name] - weight / 8), 0.03, shares)
        counts = Counter(owners(registry).values())
        for name, weight in (("b0", 1), ("b1", 2), ("b2", 3), ("b3", 2)):
            self.assertLess(abs(counts[name] / len(KEYS) - weight / 8), 0.03, counts)

    def test_huge_weights_keep_the_ring_bounded(self) -> None:
        """Weights of 1000 halve every backend's points rather than grow the ring."""
        ring: Ring[str] = Ring(max_points=1 << 14)
        ring.build([(f"b{i}", f"b{i}", 1000.0) for i in range(20)])
        self.assertLessEqual(len(ring.points), 1 << 14)
        self.assertGreater(len(ring.points), 1 << 13)
        shares = ring.shares()
        self.assertLess(max(shares.values()) / min(shares.values()), 1.25)


class RebuildTests(SynchronousTestCase):
    def test_one_build_per_burst_of_changes(self) -> None:
        """Two hundred backends added, then several drained, cost one ring
        build each time, at the next keyed pick, not one per change."""
        builds = []
        build = Ring.build

        def counted(ring: Ring[object], members: object) -> None:
            builds.append(1)
            build(ring, members)  # type: ignore[arg-type]

        self.patch(Ring, "build", counted)
        registry = hashing([1.0] * 200)
        self.assertEqual(builds, [])
        registry.acquire(key=b"k")
        self.assertEqual(len(builds), 1)
        for backend in registry.backends[:5]:
            registry.set_draining(backend, True, "test")
        registry.acquire(key=b"k")
        registry.acquire(key=b"j")
        self.assertEqual(len(builds), 2)


class DisruptionTests(SynchronousTestCase):
    def test_removing_one_of_ten_moves_its_keys_only(self) -> None:
        """A backend leaving moves its own keys (about 1/10 of them), no other."""
        registry = hashing([1.0] * 10)
        before = owners(registry)
        gone = registry.get("b3")
        registry.set_draining(gone, True, "test")
        after = owners(registry)
        moved = {k for k in KEYS if before[k] != after[k]}
        self.assertEqual(moved, {k for k in KEYS if before[k] == "b3"})
        self.assertLess(abs(len(moved) / len(KEYS) - 1 / 10), 0.03, len(moved))
        # Back in rotation: every key comes home.
        registry.set_draining(gone, False, "test")
        self.assertEqual(owners(registry), before)

    def test_adding_one_to_ten_moves_keys_to_it_only(self) -> None:
        """A backend joining takes about 1/11 of the keys, all from the others."""
        registry = hashing([1.0] * 10)
        before = owners(registry)
        registry.add(BackendConfig("new", Address("127.0.0.1", 8000)), "test")
        after = owners(registry)
        moved = {k for k in KEYS if before[k] != after[k]}
        self.assertEqual({after[k] for k in moved}, {"new"})
        self.assertLess(abs(len(moved) / len(KEYS) - 1 / 11), 0.03, len(moved))

    @settings(max_examples=30, deadline=None)
    @given(
        st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=2, max_size=12),
        st.data(),
    )
    def test_no_other_key_moves(
        self, weights: list[float], data: st.DataObject
    ) -> None:
        """Whatever the weights, removing any one backend moves none of the
        keys the others owned, and adding it back restores every key."""
        keys = KEYS[:500]
        registry = hashing(weights)
        before = owners(registry, keys)
        name = f"b{data.draw(st.integers(0, len(weights) - 1))}"
        backend = registry.get(name)
        registry.set_healthy(backend, False, "test")
        after = owners(registry, keys)
        for key in keys:
            if before[key] != name:
                self.assertEqual(after[key], before[key])
            else:
                self.assertNotEqual(after[key], name)
        registry.set_healthy(backend, True, "test")
        self.assertEqual(owners(registry, keys), before)


class BoundTests(SynchronousTestCase):
    def test_one_hot_key_spreads_within_the_bound(self) -> None:
        """Many requests of one key in flight: its home takes its bound, the
        walk sends the rest on along the ring, the same way each time."""
        registry = hashing([1.0] * 4)
        home = owners(registry, [b"hot"])[b"hot"]
        held = [registry.acquire(key=b"hot") for _ in range(40)]
        assert all(held)
        loads = {b.name: b.active for b in registry.backends}
        self.assertEqual(max(loads.values()), math.ceil(1.25 * 40 / 4))
        self.assertEqual(loads[home], max(loads.values()))
        self.assertEqual(sum(loads.values()), 40)
        # The overflow went to the home's successors on the ring, in order.
        ring = ring_of(registry).ring
        start = ring.index(position(b"hot"))
        order = list(dict.fromkeys(b.name for b in ring.owners[start:] + ring.owners))
        filled = [loads[name] for name in order]
        self.assertEqual(filled, sorted(filled, reverse=True))
        for lease in held:
            lease.release()  # type: ignore[union-attr]
        self.assertEqual(owners(registry, [b"hot"]), {b"hot": home})

    def test_factor_zero_is_no_bound(self) -> None:
        """hash_balance_factor = 0: every request of a key goes home."""
        registry = hashing([1.0] * 4, factor=0)
        held = [registry.acquire(key=b"hot") for _ in range(40)]
        assert all(held)
        self.assertEqual(sorted(b.active for b in registry.backends), [0, 0, 0, 40])

    def test_retry_walks_on(self) -> None:
        """A retry (its backend excluded) goes to the key's next backend on the ring."""
        registry = hashing([1.0] * 5)
        first = registry.acquire(key=b"k")
        assert first is not None
        second = registry.acquire([first.backend], key=b"k")
        assert second is not None
        self.assertIsNot(second.backend, first.backend)
        second.release()
        again = registry.acquire([first.backend], key=b"k")
        assert again is not None
        self.assertIs(again.backend, second.backend)

    def test_full_backends_are_passed_over(self) -> None:
        """A backend at its max_connections is walked past, not waited for."""
        registry = registry_of(
            [
                BackendConfig(
                    f"b{i}", Address("127.0.0.1", 9000 + i), max_connections=2
                )
                for i in range(3)
            ],
            Clock(),
            "hash",
            hash_balance_factor=0,
        )
        held = [registry.acquire(key=b"k") for _ in range(6)]
        assert all(held)
        self.assertEqual([b.active for b in registry.backends], [2, 2, 2])
        self.assertIsNone(registry.acquire(key=b"k"))
        self.assertTrue(registry.full())

    def test_without_a_key_least_connections(self) -> None:
        """A request without the key goes to the least loaded backend."""
        registry = hashing([1.0] * 3)
        held = [registry.acquire(key=b"k") for _ in range(2)]
        assert all(held)
        lease = registry.acquire()
        assert lease is not None
        self.assertEqual(lease.backend.active, 1)
        self.assertEqual(sorted(b.active for b in registry.backends), [1, 1, 1])

    def test_load_is_counted_exactly(self) -> None:
        """The policy's count of the rotation's load follows leases, drains,
        failures and returns without a scan."""
        registry = hashing([1.0] * 4)
        policy = ring_of(registry)

        def check() -> None:
            """At a keyed pick, and after its release, the count is exact."""
            lease = registry.acquire(key=b"probe")
            assert lease is not None
            in_rotation = registry.selector.available
            self.assertEqual(policy.load, sum(b.active for b in in_rotation))
            lease.release()
            self.assertEqual(policy.load, sum(b.active for b in in_rotation))

        held = [registry.acquire(key=b"%d" % i) for i in range(20)]
        assert all(held)
        check()
        registry.set_draining(registry.backends[1], True, "test")
        check()
        for lease in held[:10]:
            lease.release()  # type: ignore[union-attr]
            lease.release()  # type: ignore[union-attr]
        check()
        registry.set_draining(registry.backends[1], False, "test")
        check()
        sticky = registry.acquire_on(registry.backends[0])
        assert sticky is not None
        check()
        for lease in [*held[10:], sticky]:
            lease.release()  # type: ignore[union-attr]
        check()
        self.assertEqual(policy.load, 0)

    def test_decision_says_key_home_and_move(self) -> None:
        """The decision log shows the key (a header only as a digest), the
        backend it maps to, and whether the bound moved it."""
        registry = hashing([1.0] * 3, hash_key=RequestKey("header", b"x-user"))
        clock = registry._clock
        secret = b"alice-secret-token"
        held = []
        for _ in range(6):
            clock.advance(1)  # type: ignore[attr-defined]
            held.append(registry.acquire(key=secret))
        decisions = registry.decisions.describe(6)
        first, last = decisions[-1], decisions[0]
        self.assertFalse(first["detail"]["moved"])
        self.assertIn("which had room", first["reason"])
        self.assertTrue(last["detail"]["moved"])
        self.assertIn("at its bound", last["reason"])
        self.assertEqual(first["detail"]["home"], last["detail"]["home"])
        for decision in decisions:
            self.assertEqual(decision["detail"]["key_name"], "header:x-user")
            self.assertNotIn("alice", repr(decision))
            self.assertIn("(18 bytes)", decision["detail"]["key"])

    def test_client_ip_is_shown(self) -> None:
        """A client address is shown whole, as the access log shows it."""
        registry = hashing([1.0] * 3)
        registry.acquire(key=b"192.0.2.9")
        decision = registry.decisions.describe(1)[0]
        self.assertEqual(decision["detail"]["key"], "192.0.2.9")
        self.assertIn("key client_ip 192.0.2.9 maps to", decision["reason"])


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[int], float, list[tuple[str, int]]]:
    weights = draw(st.lists(st.integers(1, 4), min_size=2, max_size=8))
    factor = draw(st.sampled_from([1.0, 1.1, 1.25, 1.5, 2.0]))
    steps = draw(
        st.lists(
            st.tuples(st.sampled_from(["acquire", "release"]), st.integers(0, 30)),
            min_size=1,
            max_size=120,
        )
    )
    return weights, factor, steps


class BoundProperties(SynchronousTestCase):
    @settings(max_examples=60, deadline=None)
    @given(workloads())
    def test_bound_never_exceeded(
        self, workload: tuple[list[int], float, list[tuple[str, int]]]
    ) -> None:
        """After every pick, the chosen backend holds at most
        ceil(factor x mean load x its weight share), computed exactly."""
        weights, factor, steps = workload
        registry = hashing([float(w) for w in weights], factor=factor)
        total_weight = sum(weights)
        held: list[Lease] = []
        for op, n in steps:
            if op == "release" and held:
                held.pop(n % len(held)).release()
                continue
            lease = registry.acquire(key=b"key-%d" % (n % 7))
            assert lease is not None
            held.append(lease)
            load = sum(b.active for b in registry.backends)
            b = lease.backend
            exact = Fraction(factor) * load * int(b.weight) / total_weight
            self.assertLessEqual(b.active, math.ceil(exact))


class LookupTests(SynchronousTestCase):
    @settings(max_examples=30, deadline=None)
    @given(st.integers(1, 40), st.lists(st.integers(0, 2**64 - 1), max_size=200))
    def test_bucket_lookup_is_a_plain_bisect(
        self, n: int, positions: list[int]
    ) -> None:
        """The bucketed look-up finds the point a bisect of the whole ring does,
        at the ring's edges and at the points themselves too."""
        from bisect import bisect_right

        ring: Ring[str] = Ring()
        ring.build([(f"b{i}", f"b{i}", 1.0 + i % 3) for i in range(n)])
        points = ring.points
        edges = [0, 2**64 - 1, points[0], points[-1], points[len(points) // 2]]
        for at in [*positions, *edges, *(p & ~0xFFFF for p in edges)]:
            expected = bisect_right(points, at | 0xFFFF)
            self.assertEqual(ring.index(at), expected if expected < len(points) else 0)
