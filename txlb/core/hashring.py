"""
Consistent hashing with bounded loads: C{algorithm = hash}.

The ring (L{txlb.core.ring.Ring}) places each backend at C{POINTS} points per unit of
weight, each point a 64-bit BLAKE2b hash of the backend's name and the
point's number, so every process and every restart builds the same ring
from the same names and weights.  A request's key is hashed the same way
and goes to the owner of the first point at or after it.  When a backend
leaves, only the keys it owned move (to the next points' owners); when one
joins, only the keys of its new arcs move to it: about 1/N of them either
way, and no other key moves.

The bound (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with
Bounded Loads", 2017; HAProxy's C{hash-balance-factor}): a backend takes a
request only while its load (requests in flight, here and elsewhere) is
below C{ceil(factor x (L + 1) x weight / W)}, where L is the load of the
whole rotation and W its weight; otherwise the request walks on along the
ring to the next backend that is, so the keys a busy backend sheds go to
the same next backend every time.  Since the capacities add up to more than
L + 1, some backend always has room, unless the others are excluded (tried
already) or at their C{max_connections}.

Ring rather than Maglev: the ring moves no key but those of the backend
that came or went (Maglev moves a few more), the bound's walk is simply the
next point, and the ring changes incrementally (each backend's points are
made once; a change merges sorted runs in C), where Maglev's table keeps a
fixed size (65537 in Envoy) and costs about M ln M Python steps (~0.3 s)
to fill on every change.  A look-up is a C{bisect} over the points (at
1000 backends, 160,000 of them): O(log M) in C.

A request without a key is balanced by least connections (a scan).
"""

from __future__ import annotations

import hmac
import math
import os
from collections.abc import Container, Sequence
from typing import Any, ClassVar

from txlb.core.policies import C, Choosable, LeastConn
from txlb.core.ring import SLOT, Ring, position

__all__ = ["ConsistentHash"]

_REFRESH = 64
"""
Keyed picks between two sums of the load counted elsewhere (C{others}): at
least this many, and at least as many as there are backends.
"""


_cost = LeastConn.cost


class ConsistentHash:
    """
    C{algorithm = hash}: the ring, the bound, and what it last did (for the
    decision log).  The selector tells it of every change of the rotation
    (L{rotated}), weight (L{touched}), pick (L{picked}) and release
    (L{released}), so it keeps the rotation's load without a scan.
    """

    name: ClassVar[str] = "hash"
    needs_latency: ClassVar[bool] = False
    by_load: ClassVar[bool] = True
    indexed: ClassVar[bool] = False
    chooses: ClassVar[bool] = True
    counts_load: ClassVar[bool] = True

    def __init__(self, factor: float = 1.25, key_name: str = "client_ip") -> None:
        """
        @param factor: C{hash_balance_factor} (0: no bound).
        @param key_name: what the key is (C{hash_key}), for the explanations.
        """
        self.factor = factor
        self.key_name = key_name
        self.ring: Ring[Any] = Ring()
        self._shares: dict[str, float] | None = None
        self._rotation: Sequence[Any] = ()
        self._stale = False
        self.members: set[Any] = set()
        self.load = 0
        self.others = 0
        self.weight_total = 0.0
        self._weights: dict[Any, float] = {}
        self._until_refresh = _REFRESH
        self._last: tuple[Any, ...] = ()
        # Keys are shown in the decision log only as a digest under this
        # process's own secret: equal keys look equal, none can be guessed.
        self._secret = os.urandom(16)

    cost = staticmethod(_cost)

    # Nothing to learn from latencies.

    def estimate(self, candidates: Sequence[Any], now: float) -> None:
        pass

    def observe(self, backend: Any, seconds: float, now: float) -> None:
        pass

    # --- what the selector tells it ------------------------------------------------

    def rotated(self, rotation: Sequence[Choosable]) -> None:
        """
        The rotation changed.  Nothing is counted now: the next keyed pick
        brings the ring and the counts up to date (L{_refresh}), so that a
        thousand backends added at start-up, or a burst of changes, cost one
        rebuild instead of one each.
        """
        self._rotation = rotation
        self._stale = True

    def _refresh(self) -> None:
        rotation = self._rotation
        members = [(b, b.name, b.configured_weight) for b in rotation]
        if tuple((name, w) for _, name, w in members) != self.ring.signature:
            self.ring.build(members)
            self._shares = None
        self.members = set(rotation)
        self.load = sum(b.active for b in rotation)
        self._until_refresh = 0
        self._weights = {b: b.weight for b in rotation}
        self.weight_total = sum(self._weights.values())
        self._stale = False

    @property
    def key_shares(self) -> dict[str, float]:
        """Each backend's part of the ring (of all keys), by name."""
        if self._stale:
            self._refresh()
        if self._shares is None:
            self._shares = {b.name: v for b, v in self.ring.shares().items()}
        return self._shares

    def touched(self, backend: Choosable) -> None:
        """C{backend}'s weight may have changed (slow start, admin)."""
        old = self._weights.get(backend)
        if old is not None and old != backend.weight and not self._stale:
            self._weights[backend] = backend.weight
            self.weight_total += backend.weight - old

    def picked(self, backend: Choosable) -> None:
        if backend in self.members:
            self.load += 1

    def released(self, backend: Choosable) -> None:
        if backend in self.members:
            self.load -= 1

    # --- choosing ------------------------------------------------------------------

    def capacity(self, backend: Choosable, total: int) -> int:
        """
        How many requests C{backend} may hold when the rotation holds
        C{total} (the new one included).  A hair under the exact value
        before rounding up, so float error never lets a backend over it.
        """
        share = self.factor * total * backend.weight / self.weight_total
        return math.ceil(share - 1e-9)

    def choose(
        self,
        rotation: Sequence[C],
        exclude: Container[C],
        key: bytes | None,
        limited: bool,
    ) -> C | None:
        """The backend for C{key}, or least connections without one."""
        if self._stale:
            self._refresh()
        if key is None or not self.ring.points:
            return self._least(rotation, exclude, limited)
        self._until_refresh -= 1
        if self._until_refresh <= 0:
            # At most one backend's count read per pick, on average.
            self._until_refresh = max(_REFRESH, len(rotation))
            self.others = sum(b.others for b in rotation)
        ring = self.ring
        at = position(key)
        i = ring.index(at)
        home: C = ring.owner_at(i)
        factor = self.factor
        total = self.load + self.others + 1
        if (
            (not exclude or home not in exclude)
            and not (limited and home.full)
            and (not factor or home.active + home.others < self.capacity(home, total))
        ):
            self._last = ("ring", key, at, home, [home], exclude, limited)
            return home
        found: C | None = self._walk(key, at, i, exclude, limited, total)
        return found

    def _walk(
        self,
        key: bytes,
        at: int,
        start: int,
        exclude: Container[Any],
        limited: bool,
        total: int,
    ) -> Any:
        """On along the ring from C{start} to the first backend with room."""
        ring = self.ring
        points = ring.points
        members = ring.members
        size = len(points)
        seen = [members[points[start] & SLOT]]
        distinct = len(self.members)
        factor = self.factor
        j = start
        for _ in range(size):
            if len(seen) >= distinct:
                break
            j += 1
            if j == size:
                j = 0
            b = members[points[j] & SLOT]
            if b in seen:
                continue
            seen.append(b)
            if (exclude and b in exclude) or (limited and b.full):
                continue
            if not factor or b.active + b.others < self.capacity(b, total):
                self._last = ("ring", key, at, b, seen, exclude, limited)
                return b
        # Nobody under the bound: those with room are excluded or full.
        usable = [
            b
            for b in seen
            if not (exclude and b in exclude) and not (limited and b.full)
        ]
        if not usable:
            self._last = ()
            return None
        best = min(usable, key=_cost)
        self._last = ("ring", key, at, best, seen, exclude, limited)
        return best

    def _least(
        self, rotation: Sequence[C], exclude: Container[C], limited: bool
    ) -> C | None:
        candidates = [
            b
            for b in rotation
            if not (exclude and b in exclude) and not (limited and b.full)
        ]
        if not candidates:
            self._last = ()
            return None
        index = self.pick(candidates)
        self._last = ("least", candidates, index)
        return candidates[index]

    def pick(self, candidates: Sequence[Any]) -> int:
        """Least connections among C{candidates}, ties to the smallest vtime."""
        best = 0
        first = candidates[0]
        best_cost, best_vtime = _cost(first), first.vtime
        for i in range(1, len(candidates)):
            c = candidates[i]
            value = _cost(c)
            if value < best_cost or (value == best_cost and c.vtime < best_vtime):
                best, best_cost, best_vtime = i, value, c.vtime
        return best

    # --- explaining ----------------------------------------------------------------

    def explained(self) -> tuple[Sequence[Any], int, dict[str, Any]]:
        """
        The last choice: the candidates it looked at, the winner's place
        among them, and what to say of it (asked only when a decision is
        logged, before the pick is counted).
        """
        last = self._last
        if last[0] == "least":
            _, candidates, index = last
            return candidates, index, {"key_name": self.key_name, "key": None}
        _, key, at, winner, seen, exclude, limited = last
        looked = list(seen)
        total = self.load + self.others + 1
        passed = {}
        for b in looked:
            if b is winner:
                break
            if exclude and b in exclude:
                passed[b.name] = "tried already"
            elif limited and b.full:
                passed[b.name] = "at its max_connections"
            else:
                cap = self.capacity(b, total)
                passed[b.name] = f"at its bound: {b.active + b.others} >= {cap}"
        detail = {
            **self.describe_key(key),
            "ring_position": f"{at:016x}",
            "home": looked[0].name,
            "moved": winner is not looked[0],
            "passed": passed,
            "bound": self.capacity(winner, total) if self.factor else None,
            "factor": self.factor,
        }
        return looked, looked.index(winner), detail

    def describe_key(self, key: bytes) -> dict[str, Any]:
        """
        A key as the decision log shows it: a client address whole (the
        access log has it too); anything else (a header, a cookie, a URI)
        only as its length and a digest under this process's secret.
        """
        if self.key_name == "client_ip":
            return {"key_name": self.key_name, "key": key.decode("latin-1")}
        digest = hmac.new(self._secret, key, "blake2s").hexdigest()[:12]
        return {
            "key_name": self.key_name,
            "key": f"#{digest} ({len(key)} bytes)",
        }

    def explain(self, winner: Any, tied: int, total: int, detail: Any = None) -> str:
        if not detail or detail.get("key") is None:
            return (
                f"no {self.key_name} in the request: least connections chose"
                f" {winner.name} of {total} ({winner.active + winner.others} active /"
                f" weight {winner.weight:g})"
            )
        where = f"key {detail['key_name']} {detail['key']} maps to {detail['home']}"
        bound = detail["bound"]
        room = f"{winner.active + winner.others} in flight"
        room += f", bound {bound}" if bound is not None else ", no bound"
        if not detail["moved"]:
            return f"{where} on the ring, which had room ({room})"
        passed = "; ".join(f"{name} {why}" for name, why in detail["passed"].items())
        return (
            f"{where} on the ring, but {passed}: the walk along the ring moved the"
            f" request to {winner.name} ({room})"
        )
