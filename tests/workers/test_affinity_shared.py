"""
p2c, hash and sticky sessions with two workers' registries sharing one
counts file, as two worker processes do (L{txlb.workers.counting}).
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.workers.test_counting import HEALTHY, Link, spec
from txlb.config import BalancingConfig, OutlierConfig
from txlb.core.registry import Registry
from txlb.workers.counting import WorkerCounts
from txlb.workers.replica import Replica
from txlb.workers.shm import Counts, Permits


class Worker:
    def __init__(
        self, counts: Counts, index: int, clock: Clock, algorithm: str
    ) -> None:
        self.registry = Registry(
            BalancingConfig(algorithm=algorithm), OutlierConfig(), clock
        )
        self.registry.quiet = True
        self.shared = WorkerCounts(counts, index, self.registry.selector, clock)
        self.registry.selector.share(self.shared)
        self.replica = Replica(self.registry, self.shared, Link())  # type: ignore[arg-type]
        self.registry.outcomes = self.replica


class SharedAffinityTests(SynchronousTestCase):
    def workers(self, algorithm: str, **kw: object) -> tuple[Worker, Worker]:
        clock = Clock()
        counts = Counts.create(2, slots=16)
        self.addCleanup(counts.close)
        other = Counts(os.dup(counts.fd), 2, slots=16)
        self.addCleanup(other.close)
        a, b = Worker(counts, 0, clock, algorithm), Worker(other, 1, clock, algorithm)
        for worker in (a, b):
            worker.replica.added(0, spec("x", 1, **kw), dict(HEALTHY))
            worker.replica.added(1, spec("y", 2, **kw), dict(HEALTHY))
        return a, b

    def test_hash_bound_counts_the_other_worker(self) -> None:
        """A key's home loaded by worker a is at its bound for worker b too:
        b's request for that key walks on."""
        a, b = self.workers("hash")
        held = [a.registry.acquire(key=b"hot") for _ in range(2)]
        assert all(held)
        home = held[0].backend.name  # type: ignore[union-attr]
        self.assertEqual({lease.backend.name for lease in held}, {home})  # type: ignore[union-attr]
        lease = b.registry.acquire(key=b"hot")
        assert lease is not None
        self.assertNotEqual(lease.backend.name, home)
        # ceil(1.25 x (2 + 1) x 1/2) = 2, and worker a holds 2 there.
        self.assertEqual(b.registry.get(home).siblings, 2)
        for h in held:
            h.release()  # type: ignore[union-attr]
        lease.release()
        again = b.registry.acquire(key=b"hot")
        assert again is not None
        self.assertEqual(again.backend.name, home)

    def test_p2c_judges_both_workers(self) -> None:
        """p2c compares the two backends' loads over both workers."""
        a, b = self.workers("p2c")
        held = a.registry.acquire()
        assert held is not None
        for _ in range(5):
            lease = b.registry.acquire()
            assert lease is not None
            self.assertNotEqual(lease.backend.name, held.backend.name)
            lease.release()

    def test_sticky_respects_shared_max_connections(self) -> None:
        """A sticky lease takes one of the backend's shared permits: with
        worker a holding the only one, b's sticky request is a miss."""
        a, b = self.workers("least_conn", max_connections=1)
        permits = Permits.create(2)
        self.addCleanup(permits.close)
        for worker in (a, b):
            for slot in (0, 1):
                worker.shared.permits(slot, os.dup(permits.fd))
        x = a.registry.get("x")
        held = a.registry.acquire_on(x)
        assert held is not None
        self.assertIsNone(b.registry.acquire_on(b.registry.get("x")))
        held.release()
        lease = b.registry.acquire_on(b.registry.get("x"))
        assert lease is not None
        lease.release()
