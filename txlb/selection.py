"""
Selection in O(log n) for large pools: the available backends in a heap,
ordered exactly as a pure policy orders them.

The heap is lazy: a backend whose key changed (a request started or ended,
its weight changed) gets a new entry with a new stamp, and entries with an
old stamp are dropped when they reach the top.  It is rebuilt when stale
entries outnumber live ones, so its size stays O(n).
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

    def __init__(self, key: Callable[[Keyed], tuple[Any, ...]]) -> None:
        self._key = key
        self._heap: list[tuple[Any, ...]] = []
        self._stamp: dict[Keyed, int] = {}

    def rebuild(self, members: Sequence[Keyed]) -> None:
        """Index exactly C{members} (the backends in rotation)."""
        key = self._key
        stamp = self._stamp
        stamp.clear()
        heap = []
        for backend in members:
            stamp[backend] = 0
            heap.append((*key(backend), 0, backend))
        heapq.heapify(heap)
        self._heap = heap

    def touch(self, backend: Keyed) -> None:
        """C{backend}'s key changed (ignored if it is not in rotation)."""
        stamp = self._stamp
        current = stamp.get(backend)
        if current is None:
            return
        current += 1
        stamp[backend] = current
        heap = self._heap
        heapq.heappush(heap, (*self._key(backend), current, backend))
        if len(heap) > 2 * len(stamp) + 64:
            self.rebuild(sorted(stamp, key=self._key))

    def best(self, exclude: Container[Keyed] = ()) -> Keyed | None:
        """The member with the smallest key that is not excluded."""
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
