"""
Selection in O(log n) for large pools: the available backends in a heap,
ordered exactly as a pure policy orders them.

The heap is lazy: a backend whose key changed (a request started or ended,
its weight changed) gets a new entry with a new stamp, and entries with an
old stamp are dropped when they reach the top.  It is rebuilt when stale
entries outnumber live ones, so its size stays O(n).

A member that may not be chosen for now (a backend at its
C{max_connections}) is parked: it stays a member, with no live entry, until
a touch finds it eligible again.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container, Hashable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["LoadIndex"]

Keyed = TypeVar("Keyed", bound=Hashable)


class LoadIndex(Generic[Keyed]):
    """
    The backends in rotation, smallest key first.

    @param key: the policy's ordering of one backend; it must end with the
        backend's position in configuration order, so that exact ties go
        where the pure policy sends them (to the first candidate).
    """

    def __init__(
        self,
        key: Callable[[Keyed], tuple[Any, ...]],
        eligible: Callable[[Keyed], bool] | None = None,
    ) -> None:
        """
        @param eligible: whether a member may be chosen now (L{None}: every
            member may); asked again on every L{touch}.
        """
        self._key = key
        self._eligible = eligible
        self._heap: list[tuple[Any, ...]] = []
        # Member -> the stamp of its live entry, or _PARKED.
        self._stamp: dict[Keyed, int] = {}
        # Stamps are never reused, so a parked member's old entries stay stale.
        self._next = 0
        self.parked = 0

    def rebuild(self, members: Sequence[Keyed]) -> None:
        """Index exactly C{members} (the backends in rotation)."""
        key = self._key
        eligible = self._eligible
        stamp = self._stamp
        stamp.clear()
        heap = []
        parked = 0
        current = self._next = self._next + 1
        for backend in members:
            if eligible is not None and not eligible(backend):
                stamp[backend] = _PARKED
                parked += 1
                continue
            stamp[backend] = current
            heap.append((*key(backend), current, backend))
        heapq.heapify(heap)
        self._heap = heap
        self.parked = parked

    def touch(self, backend: Keyed) -> None:
        """C{backend}'s key or room changed (ignored if it is not in rotation)."""
        stamp = self._stamp
        previous = stamp.get(backend)
        if previous is None:
            return
        eligible = self._eligible
        if eligible is not None and not eligible(backend):
            if previous != _PARKED:
                stamp[backend] = _PARKED
                self.parked += 1
            return
        if previous == _PARKED:
            self.parked -= 1
        current = self._next = self._next + 1
        stamp[backend] = current
        heap = self._heap
        heapq.heappush(heap, (*self._key(backend), current, backend))
        if len(heap) > 2 * len(stamp) + 64:
            # Keep only the live entries: O(n), and no key is computed again.
            live = [e for e in heap if stamp.get(e[-1]) == e[-2]]
            heapq.heapify(live)
            self._heap = live

    def best(self, exclude: Container[Keyed] = ()) -> Keyed | None:
        """The eligible member with the smallest key that is not excluded."""
        heap = self._heap
        stamp = self._stamp
        aside = []
        found = None
        while heap:
            entry = heap[0]
            backend = entry[-1]
            if stamp.get(backend) != entry[-2]:
                heapq.heappop(heap)  # stale
            elif exclude and backend in exclude:
                aside.append(heapq.heappop(heap))
            else:
                found = backend
                break
        for entry in aside:
            heapq.heappush(heap, entry)
        return found

    def is_parked(self, backend: Keyed) -> bool:
        """Whether C{backend} is a member that may not be chosen now."""
        return self._stamp.get(backend) == _PARKED


_PARKED = -1
