"""Tests for L{txlb.core.retrybudget}: retries as a share of recent requests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txlb.core.retrybudget import WINDOW, RetryBudget

START = 1_764_600_000.25  # a wall-clock time, as the reactor gives


def taken(budget: RetryBudget, now: float, tries: int) -> int:
    return sum(budget.retry(now) for _ in range(tries))


class RetryBudgetTests(SynchronousTestCase):
    def test_share_of_requests(self) -> None:
        """With no floor, 20% of 100 requests allow 20 retries, then none."""
        budget = RetryBudget(20, 0)
        for _ in range(100):
            budget.request(START)
        self.assertEqual(taken(budget, START, 50), 20)
        for _ in range(5):
            budget.request(START)
        self.assertEqual(taken(budget, START, 5), 1)

    def test_floor_without_requests(self) -> None:
        """The floor allows per_second a second over the window, requests or
        not: 3 a second is 30 in a 10 s window."""
        budget = RetryBudget(50, 3)
        self.assertEqual(taken(budget, START, 100), 3 * WINDOW)

    def test_a_burst_after_steady_traffic(self) -> None:
        """A backend dying takes its requests in flight: 50 failing at once
        after 10 s of 100 requests a second are all retried under a 20%
        budget (a concurrency budget of 20% of 150 in flight allows 30)."""
        budget = RetryBudget(20, 0)
        for second in range(10):
            for _ in range(100):
                budget.request(START + second)
        self.assertEqual(taken(budget, START + 9.5, 50), 50)

    def test_a_storm_stays_within_the_share(self) -> None:
        """A pool that fails every request for a minute (each tried again)
        gets about the budget's share of its requests retried: a fifth,
        plus the floor's 1 a second, not every one."""
        budget = RetryBudget(20, 1)
        granted = requests = 0
        for tick in range(600):  # 100 ms apart
            now = START + tick / 10
            for _ in range(10):
                budget.request(now)
                requests += 1
                granted += budget.retry(now)
        self.assertGreaterEqual(granted, 0.19 * requests)
        self.assertLessEqual(granted, 0.2 * requests + 1 * (60 + WINDOW))

    def test_the_window_forgets(self) -> None:
        """Requests and retries older than the window no longer count."""
        budget = RetryBudget(50, 0)
        for _ in range(10):
            budget.request(START)
        self.assertEqual(taken(budget, START, 10), 5)
        later = START + WINDOW + 1
        self.assertEqual(taken(budget, later, 1), 0)
        for _ in range(4):
            budget.request(later)
        self.assertEqual(taken(budget, later, 3), 2)

    def test_a_part_of_the_window_forgets(self) -> None:
        """The window moves on a second at a time: 9 s later the first
        second's requests still count, 10.5 s later they do not."""

        def four_then_six() -> RetryBudget:
            budget = RetryBudget(100, 0)
            for _ in range(4):
                budget.request(START)
            for _ in range(6):
                budget.request(START + 5)
            return budget

        self.assertEqual(taken(four_then_six(), START + 9, 20), 10)
        self.assertEqual(taken(four_then_six(), START + 10.5, 20), 6)

    @settings(max_examples=200, deadline=None)
    @given(
        st.integers(0, 100),
        st.integers(0, 5),
        st.lists(
            st.tuples(st.floats(0, 3), st.integers(0, 20), st.integers(0, 20)),
            max_size=40,
        ),
    )
    def test_never_more_than_allowed(
        self,
        percent: int,
        per_second: int,
        steps: list[tuple[float, int, int]],
    ) -> None:
        """Whatever the traffic, when a retry is granted the last window's
        retries do not exceed percent of the last WINDOW's requests plus the
        floor's reserve (the window moves a second at a time: it reaches
        back between WINDOW - 1 and WINDOW seconds)."""
        budget = RetryBudget(percent, per_second)
        now, log = START, []
        for gap, requests, retries in steps:
            now += gap
            for _ in range(requests):
                budget.request(now)
                log.append((now, "request"))
            granted = sum(budget.retry(now) for _ in range(retries))
            log += [(now, "retry")] * granted
            if not granted:
                continue
            retried = [at for at, kind in log if kind == "retry"]
            asked = [at for at, kind in log if kind == "request"]
            self.assertLessEqual(
                sum(at > now - (WINDOW - 1) for at in retried),
                sum(at > now - WINDOW for at in asked) * percent / 100
                + per_second * WINDOW,
            )
