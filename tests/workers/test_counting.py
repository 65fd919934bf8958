"""
Two workers' registries in one test, sharing one counts file as two worker
processes do: L{txlb.workers.counting} and L{txlb.workers.replica}.
"""

from __future__ import annotations

import json
import os
from array import array
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.config import Address, BackendConfig, BalancingConfig, OutlierConfig
from txlb.core.registry import Registry
from txlb.workers import protocol as commands
from txlb.workers.counting import DRIFT_SAMPLE, WorkerCounts
from txlb.workers.replica import Replica
from txlb.workers.shm import Counts, Permits


class Link:
    """What a worker sends its supervisor, recorded."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    def send(self, command: Any, **arguments: Any) -> None:
        self.sent.append((command, arguments))


HEALTHY = {
    "healthy": True,
    "probed": True,
    "ejected": False,
    "draining": False,
    "leaving": False,
    "configured_weight": 1.0,
    "ramp_start": 0.0,
    "reason": "configured",
}


def spec(name: str, port: int, **kw: Any) -> BackendConfig:
    return BackendConfig(name, Address("127.0.0.1", port), **kw)


class Worker:
    def __init__(self, counts: Counts, index: int, clock: Clock) -> None:
        self.registry = Registry(BalancingConfig(), OutlierConfig(), clock)
        self.registry.quiet = True
        self.shared = WorkerCounts(counts, index, self.registry.selector, clock)
        self.registry.selector.share(self.shared)
        self.link = Link()
        self.replica = Replica(self.registry, self.shared, self.link)  # type: ignore[arg-type]
        self.registry.outcomes = self.replica

    def add(self, slot: int, backend: BackendConfig) -> None:
        self.replica.added(slot, backend, dict(HEALTHY))


class SharedCountsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.counts = Counts.create(2, slots=16)
        self.addCleanup(self.counts.close)
        other = Counts(os.dup(self.counts.fd), 2, slots=16)
        self.addCleanup(other.close)
        self.a = Worker(self.counts, 0, self.clock)
        self.b = Worker(other, 1, self.clock)
        for worker in (self.a, self.b):
            worker.add(0, spec("x", 1))
            worker.add(1, spec("y", 2))

    def test_least_connections_judges_both_workers(self) -> None:
        """Worker b sends to the backend worker a has not loaded."""
        leases = [self.a.registry.acquire() for _ in range(2)]
        assert all(leases)
        self.assertEqual({lease.backend.name for lease in leases}, {"x", "y"})  # type: ignore[union-attr]
        lease = self.a.registry.acquire()
        assert lease is not None
        busy = lease.backend.name  # a: 2 on it, 1 on the other
        idle = {"x", "y"} - {busy}
        picked = self.b.registry.acquire()
        assert picked is not None
        self.assertEqual({picked.backend.name}, idle)
        self.assertEqual(picked.backend.siblings, 1)

    def test_peers_counts_join_the_view(self) -> None:
        """The fleet's peers' load, told by the supervisor, counts in every
        pick beside the other worker's: a worker sends to the backend the
        other balancers load least; their load falling lets a waiter in."""
        pairs = array("q", [0, 5])  # slot 0 (x): 5 in flight on peers
        self.a.replica.peers(pairs)
        self.b.replica.peers(pairs)
        picks = [self.a.registry.acquire() for _ in range(4)]
        names = [lease.backend.name for lease in picks if lease is not None]
        self.assertEqual(names, ["y"] * 4)
        x = self.a.registry.get("x")
        self.assertEqual((x.peers, x.others), (5, 5))
        b_pick = self.b.registry.acquire()
        assert b_pick is not None
        self.assertEqual(b_pick.backend.name, "y")  # 4 here + 1 vs 0 + 5
        self.a.replica.peers(array("q", [0, 0, 7, 3]))  # slot 7: unknown, ignored
        self.assertEqual((x.peers, x.others), (0, 0))
        picked = self.a.registry.acquire()
        assert picked is not None
        self.assertEqual(picked.backend.name, "x")

    def test_counts_published_and_released(self) -> None:
        """Each lease and release is in the worker's own cell at once."""
        lease = self.a.registry.acquire()
        assert lease is not None
        slot = lease.backend.slot
        self.assertEqual((self.counts.in_flight(slot), self.counts.sent(slot)), (1, 1))
        lease.release()
        self.assertEqual((self.counts.in_flight(slot), self.counts.sent(slot)), (0, 1))

    def test_max_connections_across_workers(self) -> None:
        """
        A backend's permits hold its max_connections over both workers: b
        passes over a backend a holds every permit of, and with all full it
        says to queue.
        """
        permits = Permits.create(1)
        self.addCleanup(permits.close)
        for worker in (self.a, self.b):
            worker.registry.update(
                worker.registry.get("x"), spec("x", 1, max_connections=1), "test"
            )
            worker.shared.permits(0, os.dup(permits.fd))
        held = self.a.registry.acquire([self.a.registry.get("y")])
        assert held is not None and held.backend.name == "x"
        for _ in range(3):
            lease = self.b.registry.acquire()
            assert lease is not None
            self.assertEqual(lease.backend.name, "y")
        self.assertIsNone(self.b.registry.acquire([self.b.registry.get("y")]))
        self.assertTrue(self.b.registry.full([self.b.registry.get("y")]))
        held.release()
        again = self.b.registry.acquire([self.b.registry.get("y")])
        assert again is not None
        self.assertEqual(again.backend.name, "x")

    def test_limited_without_permits_is_full(self) -> None:
        """Until its permits arrive, a limited backend takes nothing."""
        self.b.registry.update(
            self.b.registry.get("x"), spec("x", 1, max_connections=5), "test"
        )
        for _ in range(3):
            lease = self.b.registry.acquire()
            assert lease is not None
            self.assertEqual(lease.backend.name, "y")

    def test_outcomes_go_to_the_supervisor(self) -> None:
        """A worker ejects nothing itself: failures and the recovery are sent."""
        for _ in range(6):
            lease = self.a.registry.acquire([self.a.registry.get("y")])
            assert lease is not None
            lease.release(failed=True, why="answered 500")
        x = self.a.registry.get("x")
        self.assertEqual((x.ejected, x.consecutive_failures), (False, 6))
        lease = self.a.registry.acquire([self.a.registry.get("y")])
        assert lease is not None
        lease.release()
        sent = [(c, a["failed"]) for c, a in self.a.link.sent]
        self.assertEqual(
            sent, [(commands.Outcome, True)] * 6 + [(commands.Outcome, False)]
        )

    def test_state_from_the_supervisor(self) -> None:
        """An ejection the supervisor decided takes the backend out here."""
        self.b.replica.restate(0, {**HEALTHY, "ejected": True, "reason": "5 failures"})
        x = self.b.registry.get("x")
        self.assertEqual((x.state, x.history[-1].reason), ("ejected", "5 failures"))
        for _ in range(3):
            lease = self.b.registry.acquire()
            assert lease is not None
            self.assertEqual(lease.backend.name, "y")

    def test_slow_start_on_one_clock(self) -> None:
        """A ramp begun at the supervisor's time gives the same weight here."""
        self.clock.advance(100)
        self.a.registry.update(
            self.a.registry.get("x"), spec("x", 1, health=_slow(10.0)), "test"
        )
        self.a.replica.restate(0, {**HEALTHY, "ramp_start": 95.0, "reason": "back"})
        self.assertAlmostEqual(self.a.registry.get("x").weight, 0.5)

    def test_removed_clears_the_cell(self) -> None:
        """A backend removed by the supervisor leaves no count behind."""
        lease = self.a.registry.acquire([self.a.registry.get("y")])
        assert lease is not None
        self.a.replica.removed(0)
        self.assertEqual(self.counts.in_flight(0), 0)
        self.assertEqual([b.name for b in self.a.registry.backends], ["y"])

    def test_drift_measured(self) -> None:
        """
        One lease change in DRIFT_SAMPLE measures the view's drift: none
        here, where nothing changes the counts between a read and a pick;
        the other worker's leases taken since the last pick do show.
        """
        for _ in range(DRIFT_SAMPLE // 2):
            lease = self.a.registry.acquire()
            assert lease is not None
            lease.release()
        self.assertEqual(self.a.shared.reset(), (0, 0.0, 1))
        x = self.a.registry.get("x")
        self.a.registry.acquire([self.a.registry.get("y")])
        for _ in range(3):
            self.b.registry.acquire([self.b.registry.get("y")])
        for _ in range(DRIFT_SAMPLE - 1):
            self.a.shared.counted(x)
        self.assertEqual(self.a.shared.reset()[0], 3)


def _slow(seconds: float) -> Any:
    from txlb.config import HealthConfig

    return HealthConfig(slow_start=seconds)


class CodecTests(SynchronousTestCase):
    def test_spec_round_trip(self) -> None:
        """A backend's configuration crosses to a worker unchanged."""
        from txlb.config import HealthConfig

        original = spec(
            "web-1",
            8080,
            weight=2.5,
            max_connections=4,
            health=HealthConfig(path="/ping", expect_status=((200, 204), (301, 302))),
        )
        self.assertEqual(
            commands.spec_from_json(commands.spec_to_json(original)), original
        )

    def test_state_of(self) -> None:
        """A backend's state crosses with its reason; no ramp, no ramp start."""
        registry = Registry(BalancingConfig(), OutlierConfig(), Clock())
        backend = registry.add(spec("a", 1), "configured")
        state = json.loads(commands.state_of(backend, False, "why"))
        self.assertEqual(
            (state["healthy"], state["ramp_start"], state["reason"]), (True, 0.0, "why")
        )
