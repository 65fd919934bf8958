"""
The rate limit's buckets shared by the workers (C{[ratelimit]} with
C{workers = N}): one table in an anonymous shared memory file (C{memfd}),
so a client gets C{rate} from the balancer, not from each worker.

The same generic cell rate algorithm as L{txlb.core.ratelimit.LocalBuckets}
(one number per client, the theoretical arrival time of its next request),
kept in a fixed table: L{SETS} sets of L{WAYS} entries, an entry being a
client's 8-byte fingerprint (BLAKE2b of its key) and its TAT.  A client's
set is picked by its fingerprint; a new client takes the entry of its set
whose bucket refilled longest ago.  Memory is fixed (L{size}), and
an entry whose TAT has passed is as good as empty, so nothing expires by
timer.

No lock: a take reads an entry and writes it back.  Two workers taking for
the same client in the same moment can both read the same TAT, and one
request then goes uncounted; a flood of new clients in one set can push out
a client still being limited, which then starts with a full bucket.  Both
loosen the limit, never tighten it, as with C{LocalBuckets}' generations.
"""

from __future__ import annotations

import mmap
import os
from hashlib import blake2b

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from txlb.core.ratelimit import IRateLimitStore

__all__ = ["SETS", "WAYS", "SharedBuckets", "fingerprint", "size"]

SETS = 1 << 16
WAYS = 4


def size(sets: int = SETS) -> int:
    """Bytes of a table: a fingerprint and a TAT per entry (4 MiB by default)."""
    return sets * WAYS * 16


def fingerprint(key: bytes) -> int:
    """A key's fingerprint: 8 bytes of its BLAKE2b, never 0 (an empty entry)."""
    value = int.from_bytes(blake2b(key, digest_size=8).digest(), "little", signed=True)
    return value or 1


@implementer(IRateLimitStore)
class SharedBuckets:
    """The table (see the module docstring), as one process maps it."""

    def __init__(self, fd: int, clock: IReactorTime, sets: int = SETS) -> None:
        """
        @param clock: the clock the TATs are on (every worker's reactor: the
            wall clock), for L{__len__}.
        @param sets: a power of two; every process must map the same.
        """
        self.fd = fd
        self._clock = clock
        self._mask = sets - 1
        self._map = mmap.mmap(fd, size(sets))
        self._view = memoryview(self._map)
        half = size(sets) // 2
        self._fingerprints = self._view[:half].cast("q")
        self._tats = self._view[half:].cast("d")

    @classmethod
    def create(cls, clock: IReactorTime, sets: int = SETS) -> SharedBuckets:
        """A new, empty table (the supervisor's); its fd is inheritable."""
        fd = os.memfd_create("txlb-buckets", 0)
        os.ftruncate(fd, size(sets))
        os.set_inheritable(fd, True)
        return cls(fd, clock, sets)

    def take(
        self, key: bytes, now: float, rate: float, burst: int
    ) -> tuple[bool, float]:
        interval = 1.0 / rate
        mark = fingerprint(key)
        fingerprints = self._fingerprints
        tats = self._tats
        first = (mark & self._mask) * WAYS
        entry = -1
        oldest = first
        for i in range(first, first + WAYS):
            if fingerprints[i] == mark:
                entry = i
                break
            if tats[i] < tats[oldest]:
                oldest = i
        if entry < 0:
            # A new client: the entry whose bucket refilled longest ago.
            entry = oldest
            tats[entry] = 0.0
            fingerprints[entry] = mark
        tat = tats[entry]
        if tat < now:
            tat = now
        ahead = tat - now - (burst - 1) * interval
        if ahead > 1e-9:
            return False, ahead
        tats[entry] = tat + interval
        return True, 0.0

    def __len__(self) -> int:
        """Clients whose bucket is not full again (those a limit still tracks)."""
        now = self._clock.seconds()
        return sum(1 for tat in self._tats.tolist() if tat > now)

    def close(self) -> None:
        for view in (self._fingerprints, self._tats, self._view):
            view.release()
        self._map.close()
