"""
Balancing policies: each algorithm is one object that knows its formula.

A policy's C{cost} says how loaded a candidate is (lower is better); its
C{pick} chooses among candidates by that cost, ties going to the smallest
virtual start time (C{vtime}, as in start-time fair queuing), which the
registry advances by C{1/weight} on every pick, so sequential requests to
an idle balancer spread over the backends in proportion to their weights.
Its C{explain} says in words why a winner won.  The registry picks with it,
the load index (L{txlb.core.index}) orders backends by its C{cost}, and the
decision log (L{txlb.core.decisions}) explains with it: each formula is
written once, here.

A policy reads its candidates and never changes them.  The load a policy
counts is C{active + others}: requests in flight here and, with workers or a
fleet, elsewhere.

Two policies choose from the whole rotation themselves (C{chooses}, the
L{Chooser} protocol): power of two choices (L{txlb.core.p2c}) draws two
backends at random, in O(1) at any pool size, and consistent hashing
(L{txlb.core.hashring}) follows the request's key.  L{txlb.core.algorithms}
names them all.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

__all__ = [
    "LATENCY_FLOOR",
    "Candidate",
    "Choosable",
    "Chooser",
    "LeastConn",
    "LeastTime",
    "Policy",
    "RoundRobin",
    "describe_load",
]

LATENCY_FLOOR = 1e-6
"""
Added to every latency estimate, so that backends without one (no answer
yet, or TCP mode, where a connection's length is no latency) are compared by
their load alone: least_time is then least connections.
"""


class Candidate(Protocol):
    """What a policy may read of a backend."""

    @property
    def name(self) -> str: ...

    @property
    def active(self) -> int: ...

    @property
    def others(self) -> int: ...

    @property
    def weight(self) -> float: ...

    @property
    def vtime(self) -> float: ...

    @property
    def latency(self) -> float: ...


class Measured(Candidate, Protocol):
    """A backend whose latency a latency-aware policy keeps (C{needs_latency})."""

    latency: float
    latency_ewma: float
    latency_stamp: float


class Policy(Protocol):
    """
    One balancing algorithm.

    @cvar name: its name in lb.ini (C{[txlb] algorithm}).
    @cvar needs_latency: the registry must keep latency estimates for it
        (and bring C{latency} up to date before each pick).
    @cvar by_load: its cost depends on load, so ties are worth showing.
    @cvar indexed: its order can be kept in a heap (L{txlb.core.index}):
        the cost changes only when a lease starts or ends or a weight
        changes, never with time.
    @cvar chooses: it chooses from the whole rotation itself (a
        L{Chooser}) instead of C{pick} among filtered candidates.
    """

    name: ClassVar[str]
    needs_latency: ClassVar[bool]
    by_load: ClassVar[bool]
    indexed: ClassVar[bool]
    chooses: ClassVar[bool]

    def cost(self, c: Candidate) -> float:
        """How loaded C{c} is for this policy; the lowest cost wins."""

    def pick(self, candidates: Sequence[Candidate]) -> int:
        """The index of the winner among non-empty C{candidates}."""

    def explain(
        self, winner: Candidate, tied: int, total: int, detail: Any = None
    ) -> str:
        """
        Why C{winner} won, in words, from the values it had at the pick.

        @param tied: how many candidates shared the winner's cost (itself
            included).
        @param total: how many candidates there were.
        @param detail: what a L{Chooser} said of its choice (C{explained}).
        """

    def estimate(self, candidates: Sequence[Measured], now: float) -> None:
        """Bring the candidates' C{latency} up to date (C{needs_latency} only)."""

    def observe(self, backend: Measured, seconds: float, now: float) -> None:
        """
        Learn from one answer of C{backend}: C{seconds} is its latency shared
        by the requests in flight on it when it was sent (C{needs_latency}
        only).
        """


class _LoadOnly:
    """What a policy that ignores latency does with one: nothing."""

    def estimate(self, candidates: Sequence[Measured], now: float) -> None:
        pass

    def observe(self, backend: Measured, seconds: float, now: float) -> None:
        pass


def _pick_by_cost(policy: Policy, candidates: Sequence[Candidate]) -> int:
    """The lowest cost, ties to the smallest vtime, then the first."""
    cost = policy.cost
    best = 0
    first = candidates[0]
    best_cost = cost(first)
    best_vtime = first.vtime
    for i in range(1, len(candidates)):
        c = candidates[i]
        value = cost(c)
        if value < best_cost or (value == best_cost and c.vtime < best_vtime):
            best, best_cost, best_vtime = i, value, c.vtime
    return best


def _load(c: Candidate) -> str:
    active = c.active + c.others
    return f"{active} active / weight {c.weight:g} = {active / c.weight:.3g}"


describe_load = _load
"""A candidate's load, in words."""


class LeastConn(_LoadOnly):
    """
    Weighted least connections: the fewest requests in flight per unit of
    weight.
    """

    name: ClassVar[str] = "least_conn"
    needs_latency: ClassVar[bool] = False
    by_load: ClassVar[bool] = True
    indexed: ClassVar[bool] = True
    chooses: ClassVar[bool] = False

    @staticmethod
    def cost(c: Candidate) -> float:
        return (c.active + c.others) / c.weight

    def pick(self, candidates: Sequence[Candidate]) -> int:
        # _pick_by_cost with the cost inline: this is every request's pick.
        best = 0
        first = candidates[0]
        best_cost = (first.active + first.others) / first.weight
        best_vtime = first.vtime
        for i in range(1, len(candidates)):
            c = candidates[i]
            value = (c.active + c.others) / c.weight
            if value < best_cost or (value == best_cost and c.vtime < best_vtime):
                best, best_cost, best_vtime = i, value, c.vtime
        return best

    def explain(
        self, winner: Candidate, tied: int, total: int, detail: Any = None
    ) -> str:
        if total == 1:
            return f"{winner.name} was the only backend available ({_load(winner)})"
        if tied == 1:
            return (
                f"{winner.name} had the lowest load of {total} candidates:"
                f" {_load(winner)}"
            )
        return (
            f"{tied} of {total} candidates tied at the lowest load"
            f" ({self.cost(winner):.3g}); {winner.name} won the tie with the smallest"
            f" virtual time ({winner.vtime:.1f}): it had been served least recently"
            " for its weight"
        )


class RoundRobin(_LoadOnly):
    """Weighted round robin: the smallest C{vtime}, whatever the load."""

    name: ClassVar[str] = "round_robin"
    needs_latency: ClassVar[bool] = False
    by_load: ClassVar[bool] = False
    indexed: ClassVar[bool] = True
    chooses: ClassVar[bool] = False

    @staticmethod
    def cost(c: Candidate) -> float:
        return 0.0

    def pick(self, candidates: Sequence[Candidate]) -> int:
        best = 0
        best_vtime = candidates[0].vtime
        for i in range(1, len(candidates)):
            vtime = candidates[i].vtime
            if vtime < best_vtime:
                best, best_vtime = i, vtime
        return best

    def explain(
        self, winner: Candidate, tied: int, total: int, detail: Any = None
    ) -> str:
        if total == 1:
            return f"{winner.name} was the only backend available ({_load(winner)})"
        return (
            f"{winner.name} had the smallest virtual time ({winner.vtime:.1f}) of"
            f" {total} candidates; round robin ignores load"
        )


class LeastTime:
    """
    Least expected time (as nginx's least_time, with Linkerd's EWMA): the
    shortest expected wait, a candidate's time per request at load
    (C{latency}) times its requests in flight plus this one, per unit of
    weight.  Unlike least connections it sees that an equal queue drains
    slower on a slow backend.  C{latency} changes with time (estimates
    fade), so it is not indexed: every pick scans.
    """

    name: ClassVar[str] = "least_time"
    needs_latency: ClassVar[bool] = True
    by_load: ClassVar[bool] = True
    indexed: ClassVar[bool] = False
    chooses: ClassVar[bool] = False

    def __init__(self, ewma_decay: float = 10.0) -> None:
        """
        @param ewma_decay: the time constant, in seconds: samples older than
            this weigh less than 1/e, and so does the estimate of a backend
            that has had no sample for that long.
        """
        self.ewma_decay = ewma_decay

    @staticmethod
    def cost(c: Candidate) -> float:
        return (c.latency + LATENCY_FLOOR) * (c.active + c.others + 1) / c.weight

    def pick(self, candidates: Sequence[Candidate]) -> int:
        return _pick_by_cost(self, candidates)

    def explain(
        self, winner: Candidate, tied: int, total: int, detail: Any = None
    ) -> str:
        if total == 1:
            return f"{winner.name} was the only backend available ({_load(winner)})"
        active = winner.active + winner.others
        why = (
            f"{winner.name} had the shortest expected wait of {total} candidates:"
            f" latency {winner.latency * 1000:.3g} ms x ({active} active + 1)"
            f" / weight {winner.weight:g} = {self.cost(winner) * 1000:.3g} ms"
        )
        if tied > 1:
            why += f", tied with {tied - 1} more; it had been served least recently"
        return why

    def estimate(self, candidates: Sequence[Measured], now: float) -> None:
        """
        Set each candidate's C{latency}: its average, faded by the time since
        its last sample, so that a backend that was slow once and then got no
        traffic is tried again after a while instead of being starved for
        ever.
        """
        tau = self.ewma_decay
        for b in candidates:
            b.latency = b.latency_ewma * math.exp(-(now - b.latency_stamp) / tau)

    def observe(self, backend: Measured, seconds: float, now: float) -> None:
        """
        Take one sample: a request's latency divided by the requests in
        flight on its backend when it was sent.  By Little's law that is the
        backend's time per request at that load, so the cost's estimate x
        (active + 1) is the wait a new request can expect, whether the
        backend serves requests side by side or queues them (a raw latency
        would count the queue twice).  Samples are averaged with weights
        that fade with their age.
        """
        b = backend
        if b.latency_ewma:
            kept = math.exp(-max(0.0, now - b.latency_stamp) / self.ewma_decay)
            b.latency_ewma = b.latency_ewma * kept + seconds * (1 - kept)
        else:
            b.latency_ewma = seconds
        b.latency_stamp = now


class Choosable(Candidate, Protocol):
    """What a L{Chooser} reads of a backend besides a L{Candidate}."""

    @property
    def full(self) -> bool: ...

    @property
    def configured_weight(self) -> float: ...


C = TypeVar("C", bound=Choosable)


class Chooser(Policy, Protocol):
    """
    A policy that chooses from the whole rotation itself, told by the
    selector of every change to it.

    @cvar counts_load: it keeps the rotation's load from C{picked} and
        C{released} (each lease then tells it when it ends).
    """

    counts_load: ClassVar[bool]

    def choose(
        self,
        rotation: Sequence[C],
        exclude: Container[C],
        key: bytes | None,
        limited: bool,
    ) -> C | None:
        """
        A backend of C{rotation} not in C{exclude} and, when C{limited} (some
        backend has a C{max_connections}), not full; or L{None}.

        @param key: the request's key (C{hash_key}), if any.
        """

    def explained(self) -> tuple[Sequence[Any], int, dict[str, Any]]:
        """The last choice's candidates, the winner's place, and its detail."""

    def rotated(self, rotation: Sequence[Choosable]) -> None:
        """The rotation is now C{rotation}."""

    def touched(self, backend: Choosable) -> None:
        """C{backend}'s weight or room may have changed."""

    def picked(self, backend: Choosable) -> None:
        """One more request on C{backend} (however it was chosen)."""

    def released(self, backend: Choosable) -> None:
        """One request fewer on C{backend}."""
