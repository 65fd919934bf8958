"""The client connection limit shared by the HTTP front end and TCP mode."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from txlb.net.admission import ClientLimit


class ClientLimitTests(SynchronousTestCase):
    def test_admits_below_the_limit_and_counts_refusals(self) -> None:
        limit = ClientLimit(2, Clock())
        self.assertTrue(limit.admit([1]))
        self.assertFalse(limit.admit([1, 2]))
        self.assertFalse(limit.admit([1, 2, 3]))
        self.assertEqual(limit.refused, 2)

    def test_warns_at_most_once_a_second(self) -> None:
        clock = Clock()
        limit = ClientLimit(1, clock)
        with capturedLogs() as events:
            for _ in range(5):
                limit.admit([1])
            clock.advance(1.0)
            limit.admit([1])
        warnings = [e for e in events if "refusing more" in e["log_format"]]
        self.assertEqual(len(warnings), 2)
        self.assertEqual(limit.refused, 6)
