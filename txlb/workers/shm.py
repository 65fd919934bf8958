"""
Counts shared by the worker processes of one balancer: an anonymous shared
memory file (C{memfd}) mapped by the supervisor and every worker.

Layout: one block per backend slot; in it, one 8-byte cell per worker for
its requests in flight, then one per worker for its requests sent (its
C{total_requests}).  Each cell has one writer, its worker, which stores its
own count after every lease taken or given back: no lock, no read-modify-
write across processes.  A reader sums a block's cells at pick time.  Cells
are a cache line apart (L{STRIDE}), so two workers' writes never share a
line.

An aligned 8-byte store is atomic on the machines txlb runs on (x86-64,
arm64), so a reader never sees half a count.  What a reader can miss is a
store another worker is making at that very moment: a pick may see a
sibling's count one lease old (see README, "Worker processes", for the
measured drift).  C{max_connections} does not rely on these reads: it is
held by L{Permits}, a counting semaphore in the kernel (an C{eventfd}) that
every worker takes a permit from before a lease.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable

__all__ = ["NOT_ACCEPTING", "SLOTS", "STRIDE", "Counts", "Permits"]

STRIDE = 8
"""Cells (of 8 bytes) between two workers' cells: one 64-byte cache line."""

SLOTS = 16384
"""Backend slots the shared file holds (its pages exist only once touched)."""

NOT_ACCEPTING = -1
"""A worker's connection count while it does not accept (starting, dead)."""


def _size(workers: int, slots: int) -> int:
    return (slots * 2 + 1) * workers * STRIDE * 8


class Counts:
    """
    The shared counts, as one process maps them.

    @ivar workers: the number of worker columns.
    """

    def __init__(self, fd: int, workers: int, slots: int = SLOTS) -> None:
        self.fd = fd
        self.workers = workers
        self.slots = slots
        self._plane = workers * STRIDE
        self._block = 2 * self._plane
        # After the slots: one cell per worker for its client connections.
        self._meta = slots * self._block
        self._map = mmap.mmap(fd, _size(workers, slots))
        self.cells = memoryview(self._map).cast("q")

    @classmethod
    def create(cls, workers: int, slots: int = SLOTS) -> Counts:
        """A new, zeroed shared file (the supervisor's); its fd is inheritable."""
        fd = os.memfd_create("txlb-counts", 0)
        os.ftruncate(fd, _size(workers, slots))
        os.set_inheritable(fd, True)
        counts = cls(fd, workers, slots)
        for worker in range(workers):
            counts.cells[counts.connections_cell(worker)] = NOT_ACCEPTING
        return counts

    def base(self, slot: int) -> int:
        """The first cell of a slot's block."""
        if not 0 <= slot < self.slots:
            raise ValueError(f"backend slot {slot} is outside 0..{self.slots - 1}")
        return slot * self._block

    def cell(self, slot: int, worker: int) -> int:
        """The cell where C{worker} keeps its requests in flight on C{slot}."""
        return self.base(slot) + worker * STRIDE

    def total_cell(self, slot: int, worker: int) -> int:
        """The cell where C{worker} keeps its requests sent to C{slot}."""
        return self.base(slot) + self._plane + worker * STRIDE

    def connections_cell(self, worker: int) -> int:
        """The cell where C{worker} keeps its client connections open."""
        return self._meta + worker * STRIDE

    def queued_cell(self, worker: int) -> int:
        """The cell where C{worker} keeps how many requests wait in its queue."""
        return self._meta + worker * STRIDE + 1

    def queued(self, but: int = -1) -> int:
        """Requests waiting in every worker's queue (C{but} that one's)."""
        cells = self.cells
        return sum(cells[self.queued_cell(w)] for w in range(self.workers) if w != but)

    def fewest_connections(self) -> int:
        """The client connections of the least loaded worker accepting."""
        cells = self.cells
        counts = [
            cells[self.connections_cell(w)]
            for w in range(self.workers)
            if cells[self.connections_cell(w)] != NOT_ACCEPTING
        ]
        return min(counts, default=0)

    def in_flight(self, slot: int) -> int:
        """Requests in flight on C{slot}, every worker's."""
        start = self.base(slot)
        return sum(self.cells[start : start + self._plane : STRIDE])

    def sent(self, slot: int) -> int:
        """Requests sent to C{slot}, every worker's."""
        start = self.base(slot) + self._plane
        return sum(self.cells[start : start + self._plane : STRIDE])

    def column(self, worker: int, slots: Iterable[int]) -> dict[int, int]:
        """C{worker}'s requests in flight on each of C{slots} (non-zero only)."""
        cells = self.cells
        found = {}
        for slot in slots:
            count = cells[self.cell(slot, worker)]
            if count:
                found[slot] = count
        return found

    def clear(self, worker: int, slot: int | None = None) -> None:
        """
        Zero C{worker}'s cells: of one slot, or of every slot (the worker
        died: its leases died with it).  Its sent counts stay, so the
        backend's C{total_requests} never goes back.
        """
        cells = self.cells
        slots = range(self.slots) if slot is None else (slot,)
        for s in slots:
            index = self.cell(s, worker)
            if cells[index]:
                cells[index] = 0
        if slot is None:
            cells[self.connections_cell(worker)] = NOT_ACCEPTING
            cells[self.queued_cell(worker)] = 0

    def close(self) -> None:
        self.cells.release()
        self._map.close()


class Permits:
    """
    One backend's C{max_connections}, shared by every worker: a counting
    semaphore in the kernel (an C{eventfd} in semaphore mode) holding the
    permits not taken.  Taking and giving back are one system call each
    and never wait.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def create(cls, count: int) -> Permits:
        fd = os.eventfd(count, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return cls(fd)

    def take(self) -> bool:
        """One permit, if one is left."""
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            return False
        return True

    def give(self, count: int = 1) -> None:
        if count > 0:
            os.eventfd_write(self.fd, count)

    def take_up_to(self, count: int) -> int:
        """Take as many as C{count} permits (a lowered limit); how many were."""
        taken = 0
        while taken < count and self.take():
            taken += 1
        return taken

    def close(self) -> None:
        os.close(self.fd)
