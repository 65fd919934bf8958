"""
Slow start: a backend coming back into rotation (after failing checks or an
ejection) ramps from L{RAMP_FLOOR} of its weight to all of it over its
C{slow_start} seconds, so that least connections does not flood it.
"""

from __future__ import annotations

from txlb.core.backend import Backend

__all__ = ["RAMP_FLOOR", "Ramps"]

RAMP_FLOOR = 0.05
"""A backend starting slowly begins at this share of its weight."""


class Ramps:
    """The backends ramping up now, and their weights on the way."""

    def __init__(self) -> None:
        self.ramping: list[Backend] = []

    def start(self, backend: Backend, now: float) -> bool:
        """
        Ramp C{backend} from now, if it has a C{slow_start}.

        @return: whether its weight changed.
        """
        if backend.slow_start <= 0:
            return False
        backend.ramp_start = now
        backend.weight = backend.configured_weight * RAMP_FLOOR
        if backend not in self.ramping:
            self.ramping.append(backend)
        return True

    def stop(self, backend: Backend) -> None:
        """Give C{backend} its whole weight now."""
        if backend in self.ramping:
            self.ramping.remove(backend)
        backend.weight = backend.configured_weight

    def advance(self, now: float) -> tuple[list[Backend], list[Backend]]:
        """
        Move every ramp to C{now}.

        @return: the backends whose weight changed, and those whose ramp
            ended (whole weight again).
        """
        changed, finished = [], []
        for backend in list(self.ramping):
            share = (now - backend.ramp_start) / backend.slow_start
            if share >= 1:
                self.stop(backend)
                finished.append(backend)
            else:
                backend.weight = backend.configured_weight * max(RAMP_FLOOR, share)
            changed.append(backend)
        return changed, finished
