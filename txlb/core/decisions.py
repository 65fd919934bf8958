"""
A bounded log of balancing decisions, for the "why this backend?" view.

The registry calls L{DecisionLog.record} from C{acquire}, at most L{RATE}
times a second, and less often for large pools (at most L{CANDIDATE_RATE}
candidates are copied a second): a request that is not sampled costs one
comparison, and a sampled one copies the candidates' counters into a tuple
appended to a fixed-size deque.  Words and JSON are made only when the API
is read, by L{DecisionLog.describe}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any

from txlb.core.policies import _LATENCY_FLOOR

if TYPE_CHECKING:
    from txlb.core.registry import Backend

__all__ = ["CANDIDATE_RATE", "RATE", "SIZE", "DecisionLog"]

SIZE = 300
"""How many decisions are kept."""

RATE = 50.0
"""At most this many decisions are recorded per second; below it, all are."""

CANDIDATE_RATE = 2500.0
"""
At most this many candidates are copied into the log per second: with 50
backends or fewer that is L{RATE} decisions a second, with 1000 backends one
every 0.4 s.  Copying 1000 candidates 50 times a second cost a 1000-backend
pool at 10,000 requests a second about 2 us per request, as much as choosing
the backends.
"""

_SHOWN = 12
"""Candidates listed per decision (ranked by the policy); the rest are counted."""

# (time, pick number, index of the winner,
#  ((backend, active, weight, vtime, latency estimate), ...),
#  backends excluded because this request already tried them)
_Candidate = tuple["Backend", int, float, float, float]
_Entry = tuple[float, int, int, tuple[_Candidate, ...], tuple["Backend", ...]]


def _score(algorithm: str, c: _Candidate) -> float:
    """What the policy minimised (see L{txlb.policy}); 0 for round robin."""
    _, active, weight, _, latency = c
    if algorithm == "least_conn":
        return active / weight
    if algorithm == "least_time":
        return (latency + _LATENCY_FLOOR) * (active + 1) / weight
    return 0.0


class DecisionLog:
    """
    The last L{SIZE} sampled decisions.

    @ivar next_due: the time before which C{record} need not be called.
    @ivar algorithm: the policy's name, used to explain its choices.
    """

    def __init__(
        self,
        algorithm: str = "least_conn",
        size: int = SIZE,
        rate: float = RATE,
        candidate_rate: float = CANDIDATE_RATE,
    ) -> None:
        self.algorithm = algorithm
        self.next_due = 0.0
        self._interval = 1.0 / rate
        self._per_candidate = 1.0 / candidate_rate
        self._entries: deque[_Entry] = deque(maxlen=size)

    def record(
        self,
        now: float,
        pick: int,
        candidates: Sequence[Backend],
        index: int,
        excluded: Container[Backend],
    ) -> None:
        """
        Keep one decision, before the winner's counters change.

        @param pick: the registry's running count of picks (this one included).
        @param index: the winner's index in C{candidates}.
        @param excluded: backends this request had already tried.
        """
        self.next_due = now + max(self._interval, len(candidates) * self._per_candidate)
        self._entries.append(
            (
                now,
                pick,
                index,
                tuple((b, b.active, b.weight, b.vtime, b.latency) for b in candidates),
                tuple(excluded) if excluded else (),  # type: ignore[arg-type]
            )
        )

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self, limit: int = SIZE) -> list[dict[str, Any]]:
        """
        The newest C{limit} decisions as plain data, newest first, each with
        its candidates ranked the way the policy ranked them.
        """
        entries = list(self._entries)[-limit:] if limit > 0 else []
        entries.reverse()
        return [self._describe(entry) for entry in entries]

    def _describe(self, entry: _Entry) -> dict[str, Any]:
        now, pick, index, candidates, excluded = entry
        algorithm = self.algorithm
        by_load = algorithm != "round_robin"

        def rank(item: tuple[int, _Candidate]) -> tuple[float, float, int]:
            i, c = item
            return (_score(algorithm, c), c[3], i)

        ranked = sorted(enumerate(candidates), key=rank)
        winner = candidates[index]
        best = _score(algorithm, winner)
        if by_load:
            tied = [c for c in candidates if _score(algorithm, c) == best]
        else:
            tied = list(candidates)
        shown = []
        for i, c in ranked[:_SHOWN]:
            backend, active, weight, vtime, latency = c
            shown.append(
                {
                    "name": backend.name,
                    "active": active,
                    "weight": weight,
                    "load": active / weight,
                    "latency_ms": round(latency * 1000, 3),
                    "vtime": vtime,
                    "winner": i == index,
                    "tied": by_load and _score(algorithm, c) == best and len(tied) > 1,
                }
            )
        return {
            "time": now,
            "pick": pick,
            "algorithm": self.algorithm,
            "winner": winner[0].name,
            "reason": _reason(self.algorithm, winner, tied, len(candidates)),
            "tie": [c[0].name for c in tied] if by_load and len(tied) > 1 else [],
            "candidates": shown,
            "candidates_total": len(candidates),
            "excluded": [b.name for b in excluded],
        }


def _reason(
    algorithm: str,
    winner: _Candidate,
    tied: list[_Candidate],
    total: int,
) -> str:
    name, active, weight = winner[0].name, winner[1], winner[2]
    load = f"{active} active / weight {weight:g} = {active / weight:.3g}"
    if total == 1:
        return f"{name} was the only backend available ({load})"
    if algorithm == "round_robin":
        return (
            f"{name} had the smallest virtual time ({winner[3]:.1f}) of"
            f" {total} candidates; round robin ignores load"
        )
    if algorithm == "least_time":
        wait = _score(algorithm, winner) * 1000
        why = (
            f"{name} had the shortest expected wait of {total} candidates:"
            f" latency {winner[4] * 1000:.3g} ms x ({active} active + 1)"
            f" / weight {weight:g} = {wait:.3g} ms"
        )
        if len(tied) > 1:
            why += (
                f", tied with {len(tied) - 1} more; it had been served least recently"
            )
        return why
    if len(tied) == 1:
        return f"{name} had the lowest load of {total} candidates: {load}"
    return (
        f"{len(tied)} of {total} candidates tied at the lowest load"
        f" ({active / weight:.3g}); {name} won the tie with the smallest virtual"
        f" time ({winner[3]:.1f}): it had been served least recently for its weight"
    )
