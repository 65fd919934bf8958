"""Tests for L{txlb.workers.shm}: the shared counts and the permits."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from txlb.workers.shm import NOT_ACCEPTING, STRIDE, Counts, Permits


class CountsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.counts = Counts.create(3, slots=64)
        self.addCleanup(self.counts.close)

    def test_blocks_sum_every_worker(self) -> None:
        """A slot's in-flight and sent counts are every worker's cells summed."""
        c = self.counts
        c.cells[c.cell(5, 0)] = 2
        c.cells[c.cell(5, 2)] = 3
        c.cells[c.total_cell(5, 1)] = 40
        self.assertEqual((c.in_flight(5), c.sent(5)), (5, 40))
        self.assertEqual((c.in_flight(4), c.in_flight(6)), (0, 0))

    def test_cells_a_cache_line_apart(self) -> None:
        """Two workers' cells of one slot never share a 64-byte line."""
        c = self.counts
        self.assertEqual(c.cell(1, 1) - c.cell(1, 0), STRIDE)
        self.assertEqual(STRIDE * 8, 64)

    def test_another_mapping_sees_the_same(self) -> None:
        """A second mapping of the file (a worker's) shares every count."""
        c = self.counts
        fd = os.dup(c.fd)
        other = Counts(fd, 3, slots=64)
        self.addCleanup(os.close, fd)
        self.addCleanup(other.close)
        other.cells[other.cell(7, 1)] = 9
        self.assertEqual(c.in_flight(7), 9)

    def test_clear_a_dead_worker(self) -> None:
        """A dead worker's in-flight cells are zeroed; its sent counts stay."""
        c = self.counts
        c.cells[c.cell(3, 1)] = 4
        c.cells[c.total_cell(3, 1)] = 10
        c.cells[c.cell(3, 0)] = 1
        self.assertEqual(c.column(1, range(64)), {3: 4})
        c.clear(1)
        self.assertEqual((c.in_flight(3), c.sent(3)), (1, 10))
        self.assertEqual(c.cells[c.connections_cell(1)], NOT_ACCEPTING)

    def test_fewest_connections_of_those_accepting(self) -> None:
        """The least loaded worker among those accepting (not starting, not dead)."""
        c = self.counts
        self.assertEqual(c.fewest_connections(), 0)
        c.cells[c.connections_cell(0)] = 7
        c.cells[c.connections_cell(2)] = 3
        self.assertEqual(c.fewest_connections(), 3)

    def test_queued_elsewhere(self) -> None:
        """The requests waiting in the other workers' queues."""
        c = self.counts
        c.cells[c.queued_cell(0)] = 2
        c.cells[c.queued_cell(1)] = 5
        self.assertEqual((c.queued(), c.queued(but=1)), (7, 2))

    def test_slot_out_of_range(self) -> None:
        """A slot past the file's end is refused, not written."""
        self.assertRaises(ValueError, self.counts.cell, 64, 0)


class PermitsTests(SynchronousTestCase):
    def test_take_and_give(self) -> None:
        """Permits run out, never wait, and come back when given."""
        permits = Permits.create(2)
        self.addCleanup(permits.close)
        self.assertEqual([permits.take() for _ in range(3)], [True, True, False])
        permits.give()
        self.assertTrue(permits.take())
        permits.give(3)
        self.assertEqual(permits.take_up_to(5), 3)

    def test_shared_through_a_copy(self) -> None:
        """Another process's copy of the descriptor takes from the same count."""
        permits = Permits.create(1)
        other = Permits(os.dup(permits.fd))
        self.addCleanup(permits.close)
        self.addCleanup(other.close)
        self.assertTrue(other.take())
        self.assertFalse(permits.take())
