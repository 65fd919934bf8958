"""
Balancing policies: pure functions that pick one backend from candidates.

A policy reads the candidates' counters and never changes them; the
registry records the choice.  Ties are broken by a virtual start time
(C{vtime}, as in start-time fair queuing) that the registry advances by
C{1/weight} on every pick, so sequential requests to an idle balancer spread
over all backends in proportion to their weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = ["POLICIES", "Candidate", "Policy", "least_conn", "least_time", "round_robin"]

# Added to every latency estimate, so that backends without one (no answer
# yet, or TCP mode, where a connection's length is no latency) are compared
# by their load alone: least_time is then least connections.
_LATENCY_FLOOR = 1e-6


class Candidate(Protocol):
    """What a policy may read of a backend."""

    @property
    def active(self) -> int: ...

    @property
    def weight(self) -> float: ...

    @property
    def vtime(self) -> float: ...

    @property
    def latency(self) -> float: ...


Policy = Callable[[Sequence[Candidate]], int]


def least_conn(candidates: Sequence[Candidate]) -> int:
    """
    Weighted least connections: the index of the candidate with the fewest
    active connections per unit of weight; ties go to the smallest C{vtime}.

    @param candidates: a non-empty sequence.
    """
    best = 0
    first = candidates[0]
    best_load = first.active / first.weight
    best_vtime = first.vtime
    for i in range(1, len(candidates)):
        c = candidates[i]
        load = c.active / c.weight
        if load < best_load or (load == best_load and c.vtime < best_vtime):
            best, best_load, best_vtime = i, load, c.vtime
    return best


def round_robin(candidates: Sequence[Candidate]) -> int:
    """
    Weighted round robin: the index of the candidate with the smallest
    C{vtime}, whatever its load.

    @param candidates: a non-empty sequence.
    """
    best = 0
    best_vtime = candidates[0].vtime
    for i in range(1, len(candidates)):
        vtime = candidates[i].vtime
        if vtime < best_vtime:
            best, best_vtime = i, vtime
    return best


def least_time(candidates: Sequence[Candidate]) -> int:
    """
    Least expected time (as nginx's least_time, with Linkerd's EWMA): the
    index of the candidate with the shortest expected wait, its time per
    request at load (C{latency}) times its active requests plus this one,
    per unit of weight; ties go to the smallest C{vtime}.  Unlike least
    connections it sees that an equal queue drains slower on a slow backend.

    @param candidates: a non-empty sequence whose C{latency} the registry
        has brought up to date.
    """
    best = 0
    first = candidates[0]
    best_cost = (first.latency + _LATENCY_FLOOR) * (first.active + 1) / first.weight
    best_vtime = first.vtime
    for i in range(1, len(candidates)):
        c = candidates[i]
        cost = (c.latency + _LATENCY_FLOOR) * (c.active + 1) / c.weight
        if cost < best_cost or (cost == best_cost and c.vtime < best_vtime):
            best, best_cost, best_vtime = i, cost, c.vtime
    return best


POLICIES: dict[str, Policy] = {
    "least_conn": least_conn,
    "round_robin": round_robin,
    "least_time": least_time,
}
