"""
Tests for L{txlb.workers.fanout} (the supervisor's registry told to every
worker) and L{txlb.workers.accepting} (how connections spread).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import registry_of
from txlb.config import Address, BackendConfig
from txlb.workers import protocol as commands
from txlb.workers.accepting import (
    BATCH,
    PASSES,
    PAUSE,
    CountedConnections,
    balance_accepts,
)
from txlb.workers.fanout import Fanout
from txlb.workers.shm import NOT_ACCEPTING, Counts, Permits


class Link:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def callRemote(self, command: Any, **arguments: Any) -> None:
        self.calls.append((command, arguments))

    def commands(self) -> list[Any]:
        return [c for c, _ in self.calls]


def spec(name: str, port: int, **kw: Any) -> BackendConfig:
    return BackendConfig(name, Address("127.0.0.1", port), **kw)


class FanoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = registry_of(
            [spec("a", 1), spec("b", 2, max_connections=2)], self.clock
        )
        self.counts = Counts.create(2, slots=8)
        self.addCleanup(self.counts.close)
        self.link = Link()
        self.links = [self.link]
        self.fanout = Fanout(self.registry, self.counts, self._links)
        self.registry.subscribe(self.fanout)

    def _links(self) -> Iterator[Any]:
        yield from self.links

    def test_slots_and_replay(self) -> None:
        """Each backend has its own slot; a new worker hears of all, with permits."""
        a, b = self.registry.backends
        self.assertEqual((a.slot, b.slot), (0, 1))
        self.assertEqual(
            self.link.commands(), [commands.Added, commands.Added, commands.Permit]
        )
        late = Link()
        self.fanout.replay(late)  # type: ignore[arg-type]
        self.assertEqual(
            late.commands(), [commands.Added, commands.Added, commands.Permit]
        )
        added = late.calls[1][1]
        self.assertEqual(commands.spec_from_json(added["spec"]), b.spec)

    def test_peers_told(self) -> None:
        """The fleet's peers' counts reach every worker packed by slot, and a
        worker that joins later hears those not zero."""
        a, b = self.registry.backends
        self.link.calls.clear()
        a.peers, b.peers = 4, 0
        self.fanout.peers_changed([a, b])
        ((command, arguments),) = self.link.calls
        self.assertIs(command, commands.Peers)
        counts = array("q")
        counts.frombytes(arguments["counts"])
        self.assertEqual(list(counts), [a.slot, 4, b.slot, 0])
        late = Link()
        self.fanout.replay(late)  # type: ignore[arg-type]
        command, arguments = late.calls[-1]
        self.assertIs(command, commands.Peers)
        counts = array("q")
        counts.frombytes(arguments["counts"])
        self.assertEqual(list(counts), [a.slot, 4])

    def test_changes_told(self) -> None:
        """State changes, configuration changes and removals reach every worker."""
        a = self.registry.get("a")
        self.link.calls.clear()
        self.registry.set_healthy(a, False, "3/3 probes bad")
        self.registry.update(a, spec("a", 1, weight=3), "reload")
        self.registry.remove(a, "reload")
        told = self.link.commands()
        self.assertIn(commands.State, told)
        self.assertIn(commands.Changed, told)
        self.assertEqual(told[-1], commands.Removed)
        self.assertNotIn(0, self.fanout.slots)

    def test_global_counts_read_back(self) -> None:
        """The supervisor's backends show every worker's counts."""
        a = self.registry.get("a")
        self.counts.cells[self.counts.cell(a.slot, 0)] = 3
        self.counts.cells[self.counts.cell(a.slot, 1)] = 2
        self.counts.cells[self.counts.total_cell(a.slot, 1)] = 50
        self.fanout.refresh()
        self.assertEqual((a.siblings, a.others, a.total_requests), (5, 5, 50))

    def test_removed_waits_for_every_worker(self) -> None:
        """A removed backend is forgotten once no worker has a request on it."""
        a = self.registry.get("a")
        self.counts.cells[self.counts.cell(a.slot, 1)] = 1
        self.fanout.refresh()
        self.registry.remove(a, "reload")
        self.assertIn(a, self.registry.backends)
        self.counts.cells[self.counts.cell(a.slot, 1)] = 0
        self.fanout.refresh()
        self.assertNotIn(a, self.registry.backends)

    def test_dead_worker_gives_permits_back(self) -> None:
        """A dead worker's leases die with it: their permits return, its cells zero."""
        b = self.registry.get("b")
        permits = Permits(self.link.calls[2][1]["fd"])
        self.assertTrue(permits.take() and permits.take())
        self.counts.cells[self.counts.cell(b.slot, 1)] = 2
        self.fanout.worker_gone(1)
        self.assertEqual((self.counts.in_flight(b.slot), permits.take_up_to(5)), (0, 2))

    def test_lowered_limit_paid_as_permits_return(self) -> None:
        """
        A max_connections lowered below the leases out takes their permits
        back as they come: two out, lowered to one, the first returned is
        kept, the second is free again.
        """
        b = self.registry.get("b")
        permits = Permits(self.link.calls[2][1]["fd"])
        self.assertTrue(permits.take() and permits.take())
        self.registry.update(b, spec("b", 2, max_connections=1), "reload")
        permits.give()
        self.fanout.refresh()
        self.assertFalse(permits.take())
        permits.give()
        self.fanout.refresh()
        self.assertTrue(permits.take())


class FakePort:
    """A listening port with C{waiting} connections in its backlog; each it
    accepts is made a connection of C{mine}, as a real one would be."""

    def __init__(self, mine: CountedConnections, waiting: int) -> None:
        self.mine = mine
        self.waiting = waiting
        self.connected = True
        self.disconnecting = False
        self.reading = True
        self.accepted = 0
        self.numberAccepts = 100

    def doRead(self) -> None:
        for _ in range(min(self.numberAccepts, self.waiting)):
            self.waiting -= 1
            self.accepted += 1
            self.mine.add(("connection", self.accepted))

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class AcceptingTests(SynchronousTestCase):
    def workers(
        self, both: bool = True
    ) -> tuple[Counts, CountedConnections, CountedConnections]:
        """Two workers' shared counts and their connections, worker 0
        accepting (and worker 1 too, with C{both})."""
        counts = Counts.create(2, slots=4)
        self.addCleanup(counts.close)
        mine = CountedConnections(counts, 0)
        theirs = CountedConnections(counts, 1)
        mine.accepting(True)
        theirs.accepting(both)
        return counts, mine, theirs

    def test_one_accept_at_a_time_and_pause_when_busier(self) -> None:
        """
        A worker accepts one connection at a time while it has no more than
        the least loaded worker plus one (up to BATCH an event); busier, it
        lets PASSES readiness events go by for the other worker, then
        pauses for a moment.
        """
        clock = Clock()
        counts, mine, theirs = self.workers()
        port = FakePort(mine, waiting=1000)
        balance_accepts(port, counts, mine, clock)
        port.doRead()
        self.assertEqual((port.accepted, port.reading), (2, True))
        self.assertEqual(counts.cells[counts.connections_cell(0)], 2)
        for _ in range(PASSES - 1):
            port.doRead()
        self.assertEqual((port.accepted, port.reading), (2, True))
        theirs.add("c3")
        theirs.add("c4")
        port.doRead()  # the other caught up: the count of passes starts over
        self.assertEqual(port.accepted, 4)
        for _ in range(PASSES - 1):
            port.doRead()
        self.assertTrue(port.reading)
        port.doRead()
        self.assertEqual((port.accepted, port.reading), (4, False))
        clock.advance(PAUSE)
        self.assertTrue(port.reading)
        for n in range(100):
            theirs.add(n)
        port.doRead()
        self.assertEqual(port.accepted, 4 + BATCH)
        port.waiting = 0
        port.doRead()
        self.assertEqual((port.accepted, port.reading), (4 + BATCH, True))

    def test_idle_keepalive_connections_are_not_busy(self) -> None:
        """
        A connection resting between requests through a whole sweep is
        idle and not counted, so a worker holding five idle keep-alive
        connections still accepts beside one with one busy; one that sends
        its next request before the sweep after next is never idle; an
        idle one that wakes, or closes, leaves the count right.
        """
        clock = Clock()
        counts, mine, theirs = self.workers()
        for n in range(6):
            mine.add(n)
            mine.resting(n)
        theirs.add("t")
        cell = counts.connections_cell(0)
        mine.sweep()
        self.assertEqual(counts.cells[cell], 6)  # rested, not yet a whole sweep
        mine.working(5)
        mine.resting(5)  # and again: rested since the last sweep only
        mine.sweep()
        self.assertEqual((len(mine), mine.busy, counts.cells[cell]), (6, 1, 1))
        mine.working(5)
        mine.sweep()
        mine.sweep()
        self.assertEqual(mine.busy, 1)
        port = FakePort(mine, waiting=100)
        balance_accepts(port, counts, mine, clock)
        port.doRead()
        # Up to one more than the other worker's one busy connection.
        self.assertEqual((port.accepted, mine.busy), (2, 3))
        for n in range(3):
            mine.working(n)
        self.assertEqual(counts.cells[cell], 6)
        mine.discard(4)  # idle
        mine.discard(0)  # busy
        mine.working(4)  # gone: nothing to wake
        self.assertEqual((len(mine), mine.busy, counts.cells[cell]), (6, 5, 5))
        mine.resting("never added")
        mine.sweep()
        mine.sweep()
        self.assertEqual(mine.busy, 5)

    def test_a_pause_that_ends_after_the_worker_stopped(self) -> None:
        """
        A worker that stops accepting (SIGTERM) while a port is paused stays
        out of the comparison, and the closed port is not read again.
        """
        clock = Clock()
        counts, mine, _ = self.workers()
        port = FakePort(mine, waiting=100)
        balance_accepts(port, counts, mine, clock)
        for _ in range(1 + PASSES):
            port.doRead()
        self.assertFalse(port.reading)
        mine.accepting(False)
        port.disconnecting = True
        clock.advance(PAUSE)
        self.assertFalse(port.reading)
        cell = counts.connections_cell(0)
        self.assertEqual(counts.cells[cell], NOT_ACCEPTING)
        mine.discard(("connection", 1))
        self.assertEqual(counts.cells[cell], NOT_ACCEPTING)

    def test_a_worker_not_accepting_does_not_count(self) -> None:
        """A starting or dead worker's count is no reason for others to pause."""
        clock = Clock()
        counts, mine, _ = self.workers(both=False)
        for n in range(5):
            mine.add(n)
        port = FakePort(mine, waiting=3)
        balance_accepts(port, counts, mine, clock)
        port.doRead()
        self.assertEqual((port.accepted, port.reading), (3, True))
