"""
The backend queue (HAProxy's): requests that find every backend they may use
at its C{max_connections} wait here, first in first out, for a slot, at most
C{queue_timeout} seconds; at most C{queue_size} wait at once.

L{BackendQueue.lease_or_wait} is the one way both modes ask for a backend:
a lease at once, a place in the queue, or a refusal that says why.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any, Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from txlb.core.backend import Backend

__all__ = [
    "ALL_FAILED",
    "NONE_AVAILABLE",
    "QUEUE_FULL",
    "QUEUE_TIMEOUT",
    "BackendQueue",
    "LeaseClient",
    "Refusal",
    "Waiter",
]


@attrs.frozen
class Refusal:
    """Why a request or connection got no backend, and how to answer it."""

    words: str
    status: int
    retry_later: bool


NONE_AVAILABLE = Refusal("no backend is available", 503, True)
ALL_FAILED = Refusal("no backend could be reached", 502, False)
QUEUE_FULL = Refusal("no backend is available: queue full", 503, True)
QUEUE_TIMEOUT = Refusal("no backend is available: queue timed out", 503, True)


class LeaseClient(Protocol):
    """Who asks for a backend: told once, of a lease or of a refusal."""

    def leased(self, lease: Any) -> None:
        """C{lease} (a L{txlb.core.registry.Lease}) is this client's now."""

    def refused(self, refusal: Refusal) -> None:
        """No backend, for the reason given."""


class _Leases(Protocol):
    """What the queue needs of the registry."""

    def acquire(
        self, exclude: Container[Backend] = (), key: bytes | None = None
    ) -> Any: ...

    def full(self, exclude: Container[Backend] = ()) -> bool: ...


class Waiter:
    """
    A client waiting in the queue for a backend not in C{exclude} (with its
    request's C{key}, for hash).
    """

    __slots__ = ("_queue", "_timer", "client", "exclude", "key")

    def __init__(
        self,
        queue: BackendQueue,
        exclude: Container[Backend],
        client: LeaseClient,
        key: bytes | None = None,
    ) -> None:
        self._queue = queue
        self.exclude = exclude
        self.client = client
        self.key = key
        self._timer: IDelayedCall | None = None

    def cancel(self) -> bool:
        """
        Stop waiting (the client went away).  Only the first call counts,
        and none after the waiter got its lease or timed out.

        @return: whether this call took it out of the queue.
        """
        return self._leave()

    @property
    def waiting(self) -> bool:
        return self in self._queue.waiters

    def _leave(self) -> bool:
        queue = self._queue
        if queue.waiters.pop(self, False) is False:
            return False
        if queue.published is not None:
            queue.published(len(queue.waiters))
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        return True

    def _expired(self) -> None:
        self._timer = None
        if self._leave():
            self._queue.timeouts += 1
            self.client.refused(QUEUE_TIMEOUT)


class BackendQueue:
    """
    The waiting clients, oldest first (C{waiters}), and the counters the
    stats show.

    @ivar total: clients that have waited.
    @ivar timeouts: those refused after C{timeout}.
    @ivar full_rejections: those refused at once, the queue being full.
    """

    def __init__(
        self, leases: _Leases, clock: IReactorTime, size: int, timeout: float
    ) -> None:
        self._leases = leases
        self._clock = clock
        self.size = size
        self.timeout = timeout
        # Insertion-ordered: the oldest waiter first.
        self.waiters: dict[Waiter, None] = {}
        self._serving = False
        self._serve_again = False
        self._serve_later: IDelayedCall | None = None
        self.total = 0
        self.timeouts = 0
        self.full_rejections = 0
        # With worker processes: how many wait in the others' queues, and
        # where this queue's length is published (txlb.workers).
        self.elsewhere: Callable[[], int] | None = None
        self.published: Callable[[int], None] | None = None

    def __len__(self) -> int:
        return len(self.waiters)

    def configure(self, size: int, timeout: float) -> None:
        """
        Change C{size} and C{timeout} (a reload).  Clients already waiting
        keep their place and their deadline.
        """
        self.size = size
        self.timeout = timeout

    def lease_or_wait(
        self,
        client: LeaseClient,
        exclude: Container[Backend] = (),
        key: bytes | None = None,
    ) -> Waiter | None:
        """
        Give C{client} a backend not in C{exclude} (those it already tried):
        a lease at once if one is free; else, when some backend it may use
        is only full, a place in the queue; else a refusal.  The client is
        told through L{LeaseClient}, at once or later.

        @param key: the request's key (C{hash_key}), for hash.
        @return: the waiter, to cancel if the client leaves, or L{None} when
            the client has been answered already.
        """
        leases = self._leases
        lease = leases.acquire(exclude, key)
        if lease is not None:
            client.leased(lease)
            return None
        if leases.full(exclude):
            return self._wait(exclude, client, key)
        client.refused(ALL_FAILED if exclude else NONE_AVAILABLE)
        return None

    def _wait(
        self, exclude: Container[Backend], client: LeaseClient, key: bytes | None
    ) -> Waiter | None:
        waiting = len(self.waiters)
        if self.elsewhere is not None:
            waiting += self.elsewhere()
        if waiting >= self.size:
            self.full_rejections += 1
            client.refused(QUEUE_FULL)
            return None
        waiter = Waiter(self, exclude, client, key)
        self.waiters[waiter] = None
        self.total += 1
        waiter._timer = self._clock.callLater(self.timeout, waiter._expired)
        if self.published is not None:
            self.published(len(self.waiters))
        return waiter

    def serve(self) -> None:
        """
        Hand free slots to waiters, oldest first, each to a backend its
        C{exclude} allows (a lease was released).  A lease given out may be
        released at once, from the client's C{leased} itself: that inner
        call only asks this loop to start again from the oldest waiter, so
        none is skipped.
        """
        if self._serving:
            self._serve_again = True
            return
        self._serving = True
        acquire = self._leases.acquire
        try:
            while self.waiters:
                self._serve_again = False
                for waiter in list(self.waiters):
                    if not waiter.waiting:
                        continue  # cancelled by an earlier waiter's client
                    exclude = waiter.exclude
                    lease = acquire(exclude, waiter.key)
                    if lease is None:
                        if not exclude:
                            break  # no room for anyone
                        continue
                    waiter._leave()
                    waiter.client.leased(lease)
                    if self._serve_again:
                        break
                if not self._serve_again:
                    break
        finally:
            self._serving = False

    def serve_soon(self) -> None:
        """
        Serve the waiters in the next reactor turn: a backend came back,
        was added or had its limit raised, and whoever changed it finishes
        first.
        """
        if self.waiters and self._serve_later is None:
            self._serve_later = self._clock.callLater(0, self._served_later)

    def _served_later(self) -> None:
        self._serve_later = None
        self.serve()
