"""
Power of two random choices on weighted least requests: C{algorithm = p2c}
(Envoy's default).  Two distinct backends are drawn at random from the
rotation and the one with fewer requests in flight per unit of weight wins
(L{LeastConn}'s cost; a tie goes to the smaller virtual time), so the
busiest backend never gets a new request until it is no busier than
another.  O(1) at any pool size, where least connections scans or keeps a
heap.  The random source is injected (C{random.Random(seed).random} in
tests).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Container, Sequence
from typing import Any, ClassVar

from txlb.core.policies import C, Candidate, Choosable, LeastConn, describe_load

__all__ = ["DRAWS", "PowerOfTwoChoices"]

DRAWS = 4
"""Draws of one candidate before p2c scans for the usable ones."""


class PowerOfTwoChoices:
    """
    Power of two random choices on weighted least requests (Envoy's
    default): two distinct backends drawn at random from the rotation, the
    one with fewer requests in flight per unit of weight wins (a tie goes to
    the smaller virtual time).  O(1) at any pool size: a draw that lands on
    a backend this request may not use (tried already, or full) is drawn
    again, at most L{DRAWS} times, before a scan of the usable ones.
    """

    name: ClassVar[str] = "p2c"
    needs_latency: ClassVar[bool] = False
    by_load: ClassVar[bool] = True
    indexed: ClassVar[bool] = False
    chooses: ClassVar[bool] = True
    counts_load: ClassVar[bool] = False

    def __init__(self, random: Callable[[], float] | None = None) -> None:
        """@param random: a source of floats in [0, 1) (C{random.Random().random})."""
        self._random = random or _random.Random().random
        self._last: tuple[Any, ...] = ()

    cost = staticmethod(LeastConn.cost)

    def choose(
        self,
        rotation: Sequence[C],
        exclude: Container[C],
        key: bytes | None,
        limited: bool,
    ) -> C | None:
        n = len(rotation)
        if n > 1 and not exclude and not limited:
            # Every backend is usable: two draws, nothing to check.
            random = self._random
            i = int(random() * n)
            j = int(random() * (n - 1))
            j += j >= i
            winner: C = self._duel(rotation[i], rotation[j], n, False)
            return winner
        first = self._draw(rotation, n, exclude, limited, -1)
        if first < 0:
            return self._scan(rotation, exclude, limited)
        second = self._draw(rotation, n, exclude, limited, first) if n > 1 else -1
        if second < 0:
            usable = [
                i
                for i, b in enumerate(rotation)
                if i != first and _usable(b, exclude, limited)
            ]
            if not usable:
                self._last = (rotation[first], None, n, True, 0)
                return rotation[first]
            second = usable[int(self._random() * len(usable))]
        chosen: C = self._duel(rotation[first], rotation[second], n, False)
        return chosen

    def _draw(
        self,
        rotation: Sequence[C],
        n: int,
        exclude: Container[C],
        limited: bool,
        avoid: int,
    ) -> int:
        """A random usable index other than C{avoid}, or -1 after L{DRAWS} misses."""
        random = self._random
        for _ in range(DRAWS):
            if avoid < 0:
                i = int(random() * n)
            else:
                i = int(random() * (n - 1))
                i += i >= avoid
            b = rotation[i]
            if (not exclude or b not in exclude) and not (limited and b.full):
                return i
        return -1

    def _scan(
        self, rotation: Sequence[C], exclude: Container[C], limited: bool
    ) -> C | None:
        usable = [b for b in rotation if _usable(b, exclude, limited)]
        if not usable:
            self._last = ()
            return None
        if len(usable) == 1:
            self._last = (usable[0], None, len(rotation), True, 0)
            return usable[0]
        index = self.pick(usable)
        return usable[index]

    def pick(self, candidates: Sequence[Candidate]) -> int:
        """Two distinct candidates at random; the less loaded one's index."""
        n = len(candidates)
        if n == 1:
            self._last = (candidates[0], None, 1, True, 0)
            return 0
        random = self._random
        i = int(random() * n)
        j = int(random() * (n - 1))
        j += j >= i
        winner = self._duel(candidates[i], candidates[j], n, True)
        return i if winner is candidates[i] else j

    def _duel(self, a: Any, b: Any, pool: int, scanned: bool) -> Any:
        cost = self.cost
        ca, cb = cost(a), cost(b)
        first = ca < cb or (ca == cb and a.vtime <= b.vtime)
        self._last = (a, b, pool, scanned, 0 if first else 1)
        return a if first else b

    def explained(self) -> tuple[Sequence[Any], int, dict[str, Any]]:
        a, b, pool, scanned, winner = self._last
        drawn = [a] if b is None else [a, b]
        return drawn, winner, {"pool": pool, "scanned": scanned}

    def explain(
        self, winner: Candidate, tied: int, total: int, detail: Any = None
    ) -> str:
        pool = detail["pool"] if detail else total
        if total == 1:
            return (
                f"{winner.name} was the only backend this request could use of"
                f" {pool} ({describe_load(winner)})"
            )
        how = "of the usable ones" if detail and detail["scanned"] else "at random"
        if tied > 1:
            return (
                f"p2c drew 2 of {pool} backends {how}; both had load"
                f" {self.cost(winner):.3g}: {winner.name} won with the smaller virtual"
                f" time ({winner.vtime:.1f})"
            )
        return (
            f"p2c drew 2 of {pool} backends {how}; {winner.name} had the lower load:"
            f" {describe_load(winner)}"
        )

    # Nothing to learn, nothing to keep: it reads the rotation as it is.

    def estimate(self, candidates: Sequence[Any], now: float) -> None:
        pass

    def observe(self, backend: Any, seconds: float, now: float) -> None:
        pass

    def rotated(self, rotation: Sequence[Choosable]) -> None:
        pass

    def touched(self, backend: Choosable) -> None:
        pass

    def picked(self, backend: Choosable) -> None:
        pass

    def released(self, backend: Choosable) -> None:
        pass


def _usable(b: Choosable, exclude: Container[Any], limited: bool) -> bool:
    return (not exclude or b not in exclude) and not (limited and b.full)
