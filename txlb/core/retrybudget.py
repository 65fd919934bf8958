"""
The retry budget, kept as Linkerd and Finagle keep theirs: over the last
L{WINDOW} seconds, retries stay under a percentage of the requests, plus a
few a second that are always allowed.  Counted over a window rather than
over the requests in flight (as Envoy counts), a burst gets through: a
backend that dies takes its requests in flight with it, and all of them
are replayed.  A storm does not: a pool failing every request gets the
percentage more load, not C{retries} times more.
"""

from __future__ import annotations

__all__ = ["SLICES", "WINDOW", "RetryBudget"]

WINDOW = 10.0
"""Seconds of requests and retries the budget remembers."""

SLICES = 10
"""The window moves on in this many steps (one second each)."""


class RetryBudget:
    """
    Retries allowed by C{percent} of the requests seen (L{request}) in the
    last L{WINDOW} seconds plus C{per_second} a second, less the retries
    already taken (L{retry}) in it.  Times come from the caller's clock.
    """

    def __init__(self, percent: int, per_second: int) -> None:
        self._ratio = percent / 100
        self._reserve = per_second * WINDOW
        self._slice_length = WINDOW / SLICES
        self._requests = [0] * SLICES
        self._retries = [0] * SLICES
        self._slice = 0  # the slice the counts' newest entry is for

    def request(self, now: float) -> None:
        """Count a request (the per-request path: kept to an increment)."""
        current = int(now / self._slice_length)
        if current != self._slice:
            self._move_to(current)
        self._requests[current % SLICES] += 1

    def retry(self, now: float) -> bool:
        """Take a retry from the budget if one is left; whether one was."""
        current = int(now / self._slice_length)
        if current != self._slice:
            self._move_to(current)
        allowed = sum(self._requests) * self._ratio + self._reserve
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[current % SLICES] += 1
        return True

    def _move_to(self, current: int) -> None:
        """Forget the slices that left the window since the last count."""
        for passed in range(self._slice + 1, min(current, self._slice + SLICES) + 1):
            self._requests[passed % SLICES] = 0
            self._retries[passed % SLICES] = 0
        self._slice = max(current, self._slice)
