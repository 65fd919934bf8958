"""
Tests for L{txlb.decisions} and the registry features behind the "why this
backend?" panel and the admin actions (draining, weights).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.config import parse
from txlb.core.decisions import CANDIDATE_RATE, RATE, SIZE
from txlb.core.registry import Registry

CONFIG = """
[backend:web1]
address = 127.0.0.1:9001
[backend:web2]
address = 127.0.0.1:9002
[backend:web3]
address = 127.0.0.1:9003
weight = 2
"""


def _registry(algorithm: str = "least_conn") -> tuple[Clock, Registry]:
    clock = Clock()
    clock.advance(100)
    text = f"[txlb]\nalgorithm = {algorithm}\n" + CONFIG
    return clock, Registry.from_config(parse(text), clock)


class DecisionLogTests(SynchronousTestCase):
    def test_tie_broken_by_vtime(self) -> None:
        """
        On an idle balancer every backend ties at load 0; the log says so and
        names the tie-break (the smallest virtual time).
        """
        _clock, registry = _registry()
        lease = registry.acquire()
        assert lease is not None
        (decision,) = registry.decisions.describe()
        self.assertEqual(decision["winner"], lease.backend.name)
        self.assertEqual(decision["pick"], 1)
        self.assertEqual(decision["time"], 100.0)
        self.assertEqual(decision["tie"], ["web1", "web2", "web3"])
        self.assertIn("3 of 3 candidates tied at the lowest load", decision["reason"])
        self.assertIn("smallest virtual time", decision["reason"])
        self.assertEqual(decision["candidates_total"], 3)
        self.assertEqual(decision["candidates"][0]["name"], decision["winner"])
        self.assertTrue(decision["candidates"][0]["winner"])
        self.assertEqual(
            [c["active"] for c in decision["candidates"]], [0, 0, 0]
        )  # counters as they were before the pick

    def test_lowest_load_wins(self) -> None:
        """
        With different loads the log names the lowest active/weight and ranks
        the candidates as the policy did.
        """
        clock, registry = _registry()
        leases = []
        for _ in range(3):
            clock.advance(1)
            leases.append(registry.acquire())
        # Now web1, web2, web3 have 1 active each: loads 1, 1, 0.5.
        clock.advance(1)
        lease = registry.acquire()
        assert lease is not None
        self.assertEqual(lease.backend.name, "web3")
        decision = registry.decisions.describe(1)[0]
        self.assertEqual(decision["winner"], "web3")
        self.assertEqual(decision["tie"], [])
        self.assertEqual(
            decision["reason"],
            "web3 had the lowest load of 3 candidates: 1 active / weight 2 = 0.5",
        )
        self.assertEqual(
            next((c["name"], c["load"]) for c in decision["candidates"]),
            ("web3", 0.5),
        )
        self.assertEqual(
            {c["name"] for c in decision["candidates"][1:]}, {"web1", "web2"}
        )

    def test_round_robin_reason(self) -> None:
        """Round robin decisions are explained by virtual time alone."""
        _clock, registry = _registry("round_robin")
        registry.acquire()
        decision = registry.decisions.describe()[0]
        self.assertIn("round robin ignores load", decision["reason"])
        self.assertEqual(decision["tie"], [])

    def test_retry_names_excluded(self) -> None:
        """A retry's decision lists the backends this request already tried."""
        clock, registry = _registry()
        first = registry.acquire()
        assert first is not None
        clock.advance(1)
        registry.acquire(exclude=[first.backend])
        decision = registry.decisions.describe(1)[0]
        self.assertEqual(decision["excluded"], [first.backend.name])
        self.assertEqual(decision["candidates_total"], 2)

    def test_only_backend(self) -> None:
        """A single candidate is explained as the only one available."""
        _clock, registry = _registry()
        _web1, web2, web3 = registry.backends
        registry.set_draining(web2, True, "test")
        registry.set_healthy(web3, False, "test")
        registry.acquire()
        self.assertIn("only backend", registry.decisions.describe(1)[0]["reason"])

    def test_sampled_at_most_rate_per_second(self) -> None:
        """
        Many picks in the same instant record one decision; later picks are
        recorded again once 1/RATE seconds have passed.
        """
        clock, registry = _registry()
        for _ in range(100):
            lease = registry.acquire()
            assert lease is not None
            lease.release()
        self.assertEqual(len(registry.decisions), 1)
        self.assertEqual(registry.picks, 100)
        clock.advance(1.0 / RATE)
        registry.acquire()
        newest = registry.decisions.describe(1)[0]
        self.assertEqual(newest["pick"], 101)
        self.assertEqual(len(registry.decisions), 2)

    def test_large_pools_sampled_less_often(self) -> None:
        """
        A decision among many candidates is followed by the next one only
        once that many candidates fit in L{CANDIDATE_RATE} a second: 100
        candidates, 2500 a second, one decision every 0.04 s (not 1/RATE).
        """
        config = "".join(
            f"[backend:b{i}]\naddress = 127.0.0.1:{9000 + i}\n" for i in range(100)
        )
        clock = Clock()
        clock.advance(100)
        registry = Registry.from_config(parse(config), clock)
        registry.acquire()
        self.assertEqual(len(registry.decisions), 1)
        due = 100 / CANDIDATE_RATE
        self.assertGreater(due, 1.0 / RATE)
        clock.advance(due - 0.0001)
        registry.acquire()
        self.assertEqual(len(registry.decisions), 1)
        clock.advance(0.0002)
        registry.acquire()
        self.assertEqual(len(registry.decisions), 2)
        self.assertEqual(registry.decisions.describe(1)[0]["candidates_total"], 100)

    def test_bounded(self) -> None:
        """The log keeps its last SIZE decisions, newest first."""
        clock, registry = _registry()
        for _ in range(SIZE + 50):
            clock.advance(1)
            lease = registry.acquire()
            assert lease is not None
            lease.release()
        described = registry.decisions.describe()
        self.assertEqual(len(described), SIZE)
        self.assertEqual(described[0]["pick"], SIZE + 50)
        self.assertEqual(registry.decisions.describe(0), [])

    def test_many_candidates_shown_in_part(self) -> None:
        """With many backends only the best-ranked candidates are listed."""
        text = "".join(
            f"[backend:b{i}]\naddress = 127.0.0.1:{10000 + i}\n" for i in range(100)
        )
        clock = Clock()
        registry = Registry.from_config(parse(text), clock)
        registry.acquire()
        decision = registry.decisions.describe()[0]
        self.assertEqual(decision["candidates_total"], 100)
        self.assertEqual(len(decision["candidates"]), 12)
        self.assertEqual(len(decision["tie"]), 100)


class DrainAndWeightTests(SynchronousTestCase):
    def test_draining_backend_gets_no_new_requests(self) -> None:
        """
        A draining backend is skipped by acquire; its in-flight request still
        releases normally; enabling it brings it back.
        """
        clock, registry = _registry()
        web1 = registry.get("web1")
        held = registry.acquire()
        assert held is not None and held.backend is web1
        registry.set_draining(web1, True, "maintenance")
        self.assertEqual(web1.state, "draining")
        picked = set()
        for _ in range(20):
            clock.advance(1)
            lease = registry.acquire()
            assert lease is not None
            picked.add(lease.backend.name)
            lease.release()
        self.assertNotIn("web1", picked)
        self.assertTrue(held.release())
        self.assertEqual(web1.active, 0)
        registry.set_draining(web1, False, "done")
        self.assertEqual(web1.state, "healthy")
        self.assertEqual(
            [(t.state, t.reason) for t in web1.history[-2:]],
            [("draining", "maintenance"), ("healthy", "done")],
        )

    def test_draining_twice_records_once(self) -> None:
        """Setting the same draining state again changes nothing."""
        _clock, registry = _registry()
        web1 = registry.get("web1")
        registry.set_draining(web1, True, "a")
        registry.set_draining(web1, True, "b")
        self.assertEqual([t.reason for t in web1.history], ["configured", "a"])

    def test_unhealthy_and_draining(self) -> None:
        """A draining backend that recovers its health stays out of rotation."""
        clock, registry = _registry()
        web1 = registry.get("web1")
        registry.set_healthy(web1, False, "probe")
        registry.set_draining(web1, True, "admin")
        registry.set_healthy(web1, True, "probe")
        self.assertEqual(web1.state, "draining")
        for _ in range(10):
            clock.advance(1)
            lease = registry.acquire()
            assert lease is not None
            self.assertIsNot(lease.backend, web1)
            lease.release()

    def test_set_weight(self) -> None:
        """A new weight is used by the policy and recorded in the history."""
        _clock, registry = _registry()
        web1 = registry.get("web1")
        registry.set_weight(web1, 4.0, "admin")
        self.assertEqual(web1.weight, 4.0)
        self.assertEqual(web1.history[-1].reason, "weight 1 -> 4: admin")
        counts = {"web1": 0, "web2": 0, "web3": 0}
        leases = []
        for _ in range(7):
            lease = registry.acquire()
            assert lease is not None
            counts[lease.backend.name] += 1
            leases.append(lease)
        self.assertEqual(counts, {"web1": 4, "web2": 1, "web3": 2})

    def test_bad_weight(self) -> None:
        """Weights outside (0, 1000] are refused."""
        _clock, registry = _registry()
        web1 = registry.get("web1")
        for bad in (0.0, -1.0, 1000.5):
            self.assertRaises(ValueError, registry.set_weight, web1, bad, "x")
        self.assertEqual(web1.weight, 1.0)
