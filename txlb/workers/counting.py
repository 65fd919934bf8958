"""
A worker's side of the shared counts: L{WorkerCounts} is the
L{txlb.core.sharing.ISharedCounts} a worker's selector judges its picks by.

After every lease taken or given back the worker stores its own count in
its cell (L{txlb.workers.shm}).  Before a pick it reads each candidate's
block: C{siblings} is the block's sum less its own cell, so least
connections, least_time and C{max_connections}' C{full} see the whole
balancer.  Above the heap index's threshold (more than 16 backends in
rotation) reading every candidate per pick would undo the heap's O(log n):
the siblings are read at most every L{INDEX_REFRESH} seconds instead, and
only the backends whose count moved are re-keyed.

C{max_connections} itself is held by the backend's L{Permits}: a lease
takes one, its release gives it back.

One lease change in L{DRIFT_SAMPLE} also measures the drift: the count this
worker's picks see of a backend (its own plus the siblings it last read)
against the block re-read at that moment, the Workers panel's figure of how
stale a pick's view can be.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from txlb.core.backend import Backend
from txlb.core.selector import Selector
from txlb.core.sharing import ISharedCounts
from txlb.workers.shm import STRIDE, Counts, Permits

__all__ = ["DRIFT_SAMPLE", "INDEX_REFRESH", "WorkerCounts"]

INDEX_REFRESH = 0.001
"""Seconds between two reads of the siblings' counts for an indexed pool."""

DRIFT_SAMPLE = 64
"""One pick in this many measures its drift."""


@implementer(ISharedCounts)
class WorkerCounts:
    """
    One worker's view of the counts all workers share.

    @ivar drift_max: the largest drift measured since the last L{reset}.
    @ivar drift_samples: picks measured since then.
    @ivar drift_total: the sum of their drifts.
    """

    def __init__(
        self, counts: Counts, worker: int, selector: Selector, clock: IReactorTime
    ) -> None:
        self._counts = counts
        self._cells = counts.cells
        self._span = counts.workers * STRIDE
        self._offset = worker * STRIDE
        # Where the other workers' cells are in a block.
        self._siblings = tuple(w * STRIDE for w in range(counts.workers) if w != worker)
        self._selector = selector
        self._clock = clock
        self._permits: dict[int, Permits] = {}
        self._refreshed = 0.0
        self._picks = 0
        self.drift_max = 0
        self.drift_total = 0
        self.drift_samples = 0

    # --- membership (from the supervisor) ---------------------------------------

    def attach(self, backend: Backend, slot: int) -> None:
        """C{backend} counts in C{slot} of the shared file."""
        backend.slot = slot
        self._counts.base(slot)  # in range
        self.counted(backend)

    def detach(self, backend: Backend) -> None:
        """C{backend} left: its cells are zeroed, its permits closed."""
        slot = backend.slot
        if slot < 0:
            return
        cells = self._cells
        base = self._counts.base(slot) + self._offset
        cells[base] = 0
        permits = self._permits.pop(slot, None)
        if permits is not None:
            permits.close()

    def permits(self, slot: int, fd: int) -> None:
        """The semaphore of C{slot}'s max_connections (replacing any)."""
        old = self._permits.pop(slot, None)
        if old is not None:
            old.close()
        self._permits[slot] = Permits(fd)

    # --- ISharedCounts ----------------------------------------------------------

    def refresh(self, candidates: Sequence[Backend]) -> None:
        selector = self._selector
        if selector.indexed:
            now = self._clock.seconds()
            if now - self._refreshed < INDEX_REFRESH:
                return
            self._refreshed = now
        cells = self._cells
        block = 2 * self._span
        indexed = selector.indexed
        offsets = self._siblings
        one = offsets[0] if len(offsets) == 1 else -1
        for b in candidates:
            start = b.slot * block
            if one >= 0:
                siblings = cells[start + one]  # two workers: one read
            else:
                siblings = sum(cells[start + o] for o in offsets)
            if siblings != b.siblings:
                b.siblings = siblings
                b.others = siblings + b.peers
                if indexed:
                    selector.touch(b)

    def counted(self, backend: Backend) -> None:
        slot = backend.slot
        if slot < 0:
            return
        cells = self._cells
        base = slot * 2 * self._span + self._offset
        cells[base] = backend.active
        cells[base + self._span] = backend.total_requests
        self._picks += 1
        if self._picks >= DRIFT_SAMPLE:
            self._picks = 0
            self._drift(backend)

    def admit(self, backend: Backend) -> bool:
        # Until its permits arrive (just after the backend), a limited
        # backend counts as full: never more than max_connections.
        permits = self._permits.get(backend.slot)
        return permits is not None and permits.take()

    def give_back(self, backend: Backend) -> None:
        permits = self._permits.get(backend.slot)
        if permits is not None:
            permits.give()

    # --- the drift -------------------------------------------------------------

    def _drift(self, backend: Backend) -> None:
        """How far this worker's view of C{backend} is from the block now."""
        if backend.slot < 0:
            return
        start = backend.slot * 2 * self._span
        now = sum(self._cells[start : start + self._span : STRIDE])
        drift = abs(now - (backend.active + backend.siblings))
        self.drift_samples += 1
        self.drift_total += drift
        self.drift_max = max(self.drift_max, drift)

    def reset(self) -> tuple[int, float, int]:
        """The drift since the last reset (max, mean, samples), and start again."""
        samples = self.drift_samples
        mean = self.drift_total / samples if samples else 0.0
        found = (self.drift_max, mean, samples)
        self.drift_max = self.drift_total = self.drift_samples = 0
        return found
