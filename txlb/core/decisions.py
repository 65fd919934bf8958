"""
A bounded log of balancing decisions, for the "why this backend?" view.

The registry calls L{DecisionLog.record} from C{acquire}, at most L{RATE}
times a second, and less often for large pools (at most L{CANDIDATE_RATE}
candidates are copied a second): a request that is not sampled costs one
comparison, and a sampled one copies the candidates' counters into a tuple
appended to a fixed-size deque.  Words and JSON are made only when the API
is read, by L{DecisionLog.describe}, with the policy's own cost and
explanation (L{txlb.core.policies}).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container, Sequence
from typing import Any

import attrs

from txlb.core.backend import Backend
from txlb.core.policies import Policy

__all__ = ["CANDIDATE_RATE", "RATE", "SIZE", "DecisionLog", "Seen"]

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


@attrs.frozen
class Seen:
    """A candidate as it was when the decision was made (a policy L{Candidate})."""

    name: str
    active: int
    others: int
    weight: float
    vtime: float
    latency: float


# (time, pick number, index of the winner, the candidates as Seen values,
#  names of the backends excluded because this request already tried them,
#  what a choosing policy or a sticky session said of it, or None)
_Entry = tuple[
    float, int, int, tuple[tuple[Any, ...], ...], tuple[str, ...], dict[str, Any] | None
]


class DecisionLog:
    """
    The last L{SIZE} sampled decisions of one policy.

    @ivar next_due: the time before which C{record} need not be called.
    @ivar note: added to the detail of the decisions recorded while it is
        set (a sticky session's miss, set around the pick it causes).
    @ivar sections: more to show beside the decisions (sticky sessions,
        rate limits): name -> a callable returning plain data.
    """

    def __init__(
        self,
        policy: Policy,
        size: int = SIZE,
        rate: float = RATE,
        candidate_rate: float = CANDIDATE_RATE,
    ) -> None:
        self.policy = policy
        self.next_due = 0.0
        self._interval = 1.0 / rate
        self._per_candidate = 1.0 / candidate_rate
        self._entries: deque[_Entry] = deque(maxlen=size)
        self.note: dict[str, Any] | None = None
        self.sections: dict[str, Callable[[], Any]] = {}

    def record(
        self,
        now: float,
        pick: int,
        candidates: Sequence[Backend],
        index: int,
        excluded: Container[Backend],
        detail: dict[str, Any] | None = None,
    ) -> None:
        """
        Keep one decision, before the winner's counters change.

        @param pick: the registry's running count of picks (this one included).
        @param index: the winner's index in C{candidates}.
        @param excluded: backends this request had already tried.
        @param detail: what the policy (or a sticky session) said of it.
        """
        note = self.note
        if note is not None:
            detail = {**detail, **note} if detail else note
        self.next_due = now + max(self._interval, len(candidates) * self._per_candidate)
        self._entries.append(
            (
                now,
                pick,
                index,
                tuple(
                    (b.name, b.active, b.others, b.weight, b.vtime, b.latency)
                    for b in candidates
                ),
                tuple(b.name for b in excluded) if excluded else (),  # type: ignore[attr-defined]
                detail,
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

    def extras(self) -> dict[str, Any]:
        """The L{sections}' data, by name."""
        return {name: section() for name, section in self.sections.items()}

    def _describe(self, entry: _Entry) -> dict[str, Any]:
        now, pick, index, rows, excluded, detail = entry
        policy = self.policy
        cost = policy.cost
        candidates = [Seen(*row) for row in rows]
        ranked = sorted(
            enumerate(candidates),
            key=lambda item: (cost(item[1]), item[1].vtime, item[0]),
        )
        winner = candidates[index]
        best = cost(winner)
        tied = [c for c in candidates if cost(c) == best] if policy.by_load else []
        shown = []
        for i, c in ranked[:_SHOWN]:
            active = c.active + c.others
            shown.append(
                {
                    "name": c.name,
                    "active": active,
                    "weight": c.weight,
                    "load": active / c.weight,
                    "latency_ms": round(c.latency * 1000, 3),
                    "vtime": c.vtime,
                    "winner": i == index,
                    "tied": len(tied) > 1 and cost(c) == best,
                }
            )
        reason = policy.explain(
            winner,
            len(tied) if policy.by_load else len(candidates),
            len(candidates),
            detail,
        )
        sticky = detail.get("sticky") if detail else None
        if sticky == "hit":
            reason = (
                f"sticky session: the client's cookie {detail['cookie']} names"  # type: ignore[index]
                f" {winner.name}, which is in rotation and has room"
            )
        elif sticky == "miss":
            reason += f" (sticky miss: {detail['why']}; the response sets the cookie)"  # type: ignore[index]
        found = {
            "time": now,
            "pick": pick,
            "algorithm": policy.name,
            "winner": winner.name,
            "reason": reason,
            "tie": [c.name for c in tied] if len(tied) > 1 else [],
            "candidates": shown,
            "candidates_total": len(candidates),
            "excluded": list(excluded),
        }
        if detail:
            found["detail"] = detail
        return found
