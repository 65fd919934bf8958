"""Tests for L{txlb.net.deadline}: one timer for a deadline that moves."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.net.deadline import Deadline


class DeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fired: list[float] = []
        self.deadline = Deadline(
            self.clock, lambda: self.fired.append(self.clock.seconds())
        )

    def test_fires_once_when_due(self) -> None:
        """A deadline set fires once, when it passes."""
        self.deadline.set(2)
        self.clock.advance(1.9)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.2)
        self.assertEqual(self.fired, [2.1])
        self.clock.advance(10)
        self.assertEqual(self.fired, [2.1])

    def test_moved_later_costs_no_timer(self) -> None:
        """Moving a deadline later keeps the one timer, which waits again."""
        self.deadline.set(2)
        self.deadline.at += 3
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2)
        self.assertEqual((self.fired, len(self.clock.getDelayedCalls())), ([], 1))
        self.clock.advance(3)
        self.assertEqual(self.fired, [5])

    def test_sooner_moves_the_timer(self) -> None:
        """A deadline sooner than the timer moves the timer."""
        self.deadline.set(10)
        self.deadline.set(1)
        self.clock.advance(1)
        self.assertEqual(self.fired, [1])

    def test_clear_and_stop(self) -> None:
        """A cleared deadline never fires; a stopped one leaves no timer."""
        self.deadline.set(1)
        self.deadline.clear()
        self.clock.advance(2)
        self.assertEqual(self.fired, [])
        self.deadline.set(1)
        self.deadline.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
