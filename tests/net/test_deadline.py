"""Tests for L{txlb.net.deadline}: one timer for a deadline that moves."""

from __future__ import annotations

import gc
import weakref

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

    def test_stop_lets_the_owner_go(self) -> None:
        """
        A stopped deadline drops its callback: an owner that holds its
        deadline and gave it a bound method is then freed by reference
        counting, not left as a cycle (issue 16's soak).
        """

        class Owner:
            def __init__(self, clock: Clock) -> None:
                self.deadline = Deadline(clock, self.expired)

            def expired(self) -> None:
                raise AssertionError("a stopped deadline fired")

        owner = Owner(self.clock)
        owner.deadline.set(1)
        owner.deadline.stop()
        gone = weakref.ref(owner)
        enabled = gc.isenabled()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        deadline = owner.deadline
        del owner
        self.assertIsNone(gone())
        deadline.set(1)  # set again after a stop: harmless
        self.clock.advance(2)
