"""
The hash ring of C{algorithm = hash} (L{txlb.core.hashring}): owners at
points on a ring of 2**64 positions, each point a 64-bit BLAKE2b hash of
its owner's name and the point's number, so every process and every
restart builds the same ring from the same names and weights.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable
from hashlib import blake2b
from typing import Generic, TypeVar

__all__ = ["MAX_POINTS", "POINTS", "SLOT", "Ring", "position"]

POINTS = 160
"""Points on the ring per unit of weight (nginx's ketama uses as many)."""

MAX_POINTS = 1 << 20
"""The ring's largest size: beyond it every backend's points are halved."""


def position(data: bytes) -> int:
    """A key's (or a point's) place on the ring: 64 bits of BLAKE2b."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def _points(name: str, count: int) -> list[int]:
    """C{count} points of a backend (8 from each 64-byte digest), sorted."""
    out: list[int] = []
    base = name.encode("utf-8") + b"#"
    i = 0
    while len(out) < count:
        digest = blake2b(base + b"%d" % i).digest()
        out.extend(int.from_bytes(digest[j : j + 8], "big") for j in range(0, 64, 8))
        i += 1
    del out[count:]
    out.sort()
    return out


Owner = TypeVar("Owner")


SLOT = 0xFFFF
"""A point's low 16 bits: its owner's number."""


class Ring(Generic[Owner]):
    """
    Owners at points on a ring of 2**64 positions.

    Each point is kept as one 64-bit number: the top 48 bits of its
    position, and its owner's number in the low 16 bits.  So the ring is
    one sorted array of machine words, built by one sort (of one sorted run
    per owner, merged in C) and compact in memory.  A look-up reads the
    bucket of its top bits (about one point per bucket) and bisects that
    bucket only: a few reads, whatever the ring's size.

    @ivar points: the encoded points, ascending.
    @ivar members: the owners, by number.
    """

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self.max_points = max_points
        self.points: array[int] = array("Q")
        self.members: list[Owner] = []
        # starts[b]: the first point whose top bits are b or more, so that a
        # look-up searches one bucket (a few points) of the array.
        self._starts: array[int] = array("I", [0, 0])
        self._shift = 63
        self._cache: dict[str, tuple[int, list[int]]] = {}
        self.signature: tuple[tuple[str, float], ...] = ()

    def build(self, members: Iterable[tuple[Owner, str, float]]) -> None:
        """
        Place exactly C{members}: (owner, name, weight), C{POINTS} points
        per unit of weight (at least one each), halved as often as it takes
        to keep the ring within C{max_points} (L{MAX_POINTS}).
        """
        members = list(members)
        if len(members) > SLOT + 1:
            raise ValueError(f"a ring holds at most {SLOT + 1} members")
        total = sum(POINTS * w for _, _, w in members)
        scale = 1
        while total / scale > self.max_points:
            scale *= 2
        cache = self._cache
        points: list[int] = []
        for slot, (_, name, weight) in enumerate(members):
            count = max(1, round(POINTS * weight / scale))
            cached = cache.get(name)
            if cached is None or cached[0] != count:
                masked = [p & ~SLOT for p in _points(name, count)]
                cached = cache[name] = (count, masked)
            points.extend([p | slot for p in cached[1]])
        points.sort()
        self.points = array("Q", points)
        self._index(points)
        self.members = [owner for owner, _, _ in members]
        names = {name for _, name, _ in members}
        for gone in [n for n in cache if n not in names]:
            del cache[gone]
        self.signature = tuple((name, weight) for _, name, weight in members)

    def _index(self, points: list[int]) -> None:
        """About one bucket per point (at most 2**16): each point's top bits."""
        bits = min(16, max(1, len(points).bit_length()))
        shift = 64 - bits
        starts = [0] * ((1 << bits) + 1)
        for point in points:
            starts[(point >> shift) + 1] += 1
        total = 0
        for b, n in enumerate(starts):
            total += n
            starts[b] = total
        self._shift = shift
        self._starts = array("I", starts)

    def index(self, at: int) -> int:
        """The point that owns position C{at}: the first after it."""
        points = self.points
        bucket = at >> self._shift
        starts = self._starts
        i = bisect_right(points, at | SLOT, starts[bucket], starts[bucket + 1])
        return i if i < len(points) else 0

    def owner_at(self, i: int) -> Owner:
        """The owner of point C{i}."""
        return self.members[self.points[i] & SLOT]

    def owner(self, key: bytes) -> Owner:
        """The owner of C{key} (the ring must not be empty)."""
        return self.owner_at(self.index(position(key)))

    @property
    def owners(self) -> list[Owner]:
        """The owner of each point, in order (O(points): for tests and views)."""
        members = self.members
        return [members[p & SLOT] for p in self.points]

    def shares(self) -> dict[Owner, float]:
        """Each owner's part of the ring: the arcs that end at its points."""
        points = self.points
        if not points:
            return {}
        members = self.members
        arcs = [0] * len(members)
        previous = (points[-1] & ~SLOT) - (1 << 64)
        for point in points:
            at = point & ~SLOT
            arcs[point & SLOT] += at - previous
            previous = at
        return {owner: arcs[i] / (1 << 64) for i, owner in enumerate(members)}
