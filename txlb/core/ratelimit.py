"""
Rate limits (C{[ratelimit]}): a token bucket per client, C{rate} tokens a
second, C{burst} at most, one token per request.

The buckets live behind L{IRateLimitStore}, so that with several worker
processes one store can hold the balancer's buckets rather than each
worker's.  L{LocalBuckets} is the store of one process: the generic cell
rate algorithm (GCRA), the token bucket kept as one number per client, the
theoretical arrival time (TAT) of its next request; a request is let in
while the TAT is at most C{(burst - 1) / rate} ahead of now, and moves it
on by C{1 / rate}.

Memory is bounded by expiry, without a timer or a scan: a bucket untouched
for C{burst / rate} seconds is full again, the same as no bucket at all.
Buckets live in two generations (dicts) that turn over every C{burst /
rate} seconds: a bucket touched moves to the newest, and the older one,
untouched for at least that long, is dropped whole.  So the store holds the
clients seen in the last two periods, each in O(1) per request, and at most
L{MAX_CLIENTS} per generation: beyond that the generations turn over early
(a client then forgotten before its bucket refilled gets a full one: a
flood of distinct clients can loosen the limit, never tighten it).
"""

from __future__ import annotations

import math
import sys
from hashlib import blake2b
from typing import Any

from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from txlb.settings import RateLimitConfig

__all__ = [
    "KEY_BYTES",
    "MAX_CLIENTS",
    "IRateLimitStore",
    "LocalBuckets",
    "RateLimiter",
]

MAX_CLIENTS = 100_000
"""Buckets per generation of L{LocalBuckets} (so at most twice this)."""

KEY_BYTES = 64
"""Keys longer than this (a long header) are kept as a 16-byte digest."""


class IRateLimitStore(Interface):
    """Where the buckets are kept: one process's memory, or shared by workers."""

    def take(key: bytes, now: float, rate: float, burst: int) -> tuple[bool, float]:
        """
        Take one token from C{key}'s bucket, if it has one.

        @param now: the time, in seconds.
        @param rate: tokens a second.
        @param burst: the bucket's size.
        @return: whether the request may go on, and if not, the seconds
            until the bucket holds a token again.
        """

    def __len__() -> int:
        """How many clients' buckets are kept now."""


@implementer(IRateLimitStore)
class LocalBuckets:
    """The buckets of one process (see the module docstring)."""

    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self.max_clients = max_clients
        # key -> TAT; the newest generation and the one before it.
        self._current: dict[bytes, float] = {}
        self._previous: dict[bytes, float] = {}
        self._turn_at = -math.inf
        self.turnovers = 0

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def take(
        self, key: bytes, now: float, rate: float, burst: int
    ) -> tuple[bool, float]:
        interval = 1.0 / rate
        if now >= self._turn_at:
            self._turn(now + burst * interval)
        if len(key) > KEY_BYTES:
            key = blake2b(key, digest_size=16).digest()
        current = self._current
        tat = current.get(key)
        if tat is None:
            tat = self._previous.pop(key, now)
        if tat < now:
            tat = now
        ahead = tat - now - (burst - 1) * interval
        if ahead > 1e-9:
            # Kept (in the newest generation), so it cannot expire early.
            current[key] = tat
            return False, ahead
        current[key] = tat + interval
        if len(current) >= self.max_clients:
            self._turn(now + burst * interval)
        return True, 0.0

    def _turn(self, until: float) -> None:
        """The newest generation becomes the older; the older is dropped."""
        self._previous = self._current
        self._current = {}
        self._turn_at = until
        self.turnovers += 1

    def size_bytes(self) -> int:
        """The memory its dicts, keys and values take (for tests and stats)."""
        total = 0
        for generation in (self._current, self._previous):
            total += sys.getsizeof(generation)
            for key, tat in generation.items():
                total += sys.getsizeof(key) + sys.getsizeof(tat)
        return total


class RateLimiter:
    """
    C{[ratelimit]}: asks its store for each request and counts the answers
    (for the stats, the decision log and the metrics).

    @ivar allowed: requests let in.
    @ivar limited: requests refused (429).
    """

    def __init__(
        self,
        config: RateLimitConfig,
        clock: IReactorTime,
        store: IRateLimitStore | None = None,
    ) -> None:
        self.config = config
        self.rate = config.rate
        self.burst = config.bucket
        self.store: IRateLimitStore = store if store is not None else LocalBuckets()
        self._clock = clock
        self.allowed = 0
        self.limited = 0
        # Clients refused lately, for the views: at most _RECENT, cleared
        # every _RECENT_SECONDS.
        self._recent: set[bytes] = set()
        self._recent_since = clock.seconds()

    def check(self, key: bytes) -> float | None:
        """
        Count one request of C{key}.

        @return: L{None} if it may go on, else the seconds until it could.
        """
        now = self._clock.seconds()
        ok, retry_after = self.store.take(key, now, self.rate, self.burst)
        if ok:
            self.allowed += 1
            return None
        self.limited += 1
        recent = self._recent
        if now - self._recent_since >= _RECENT_SECONDS:
            recent.clear()
            self._recent_since = now
        if len(recent) < _RECENT:
            recent.add(key)
        return retry_after

    def snapshot(self) -> dict[str, Any]:
        """What the stats and the decision log show."""
        return {
            "rate": self.rate,
            "burst": self.burst,
            "key": str(self.config.key),
            "allowed": self.allowed,
            "limited": self.limited,
            "clients_tracked": len(self.store),
            "clients_limited_recently": len(self._recent),
            "recent_seconds": _RECENT_SECONDS,
        }


_RECENT = 10_000
_RECENT_SECONDS = 60.0
