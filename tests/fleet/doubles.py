"""
An in-memory double of the fleet's store (L{txlb.fleet.store.IFleetStore}),
with Redis's semantics as L{txlb.fleet.redisstore} uses them: one entry per
node, each expiring C{ttl} seconds after its last write, read all at once
with the time each has left.  Several L{txlb.fleet.sharing.Fleet}s of a test
share one, as the nodes of a fleet share one Redis.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from txlb.fleet.store import Answer, Entry, IFleetStore, StoreError


@implementer(IFleetStore)
class MemoryStore:
    """
    @ivar down: refuse every exchange (Redis unreachable).
    @ivar hold: leave exchanges unanswered (Redis hung); C{held} keeps them.
    @ivar exchanges: exchanges asked for, by node.
    """

    where = "memory://fleet"

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[bytes, float]] = {}
        self.down = False
        self.hold = False
        self.held: list[tuple[Deferred[Answer], Answer]] = []
        self.exchanges: dict[str, int] = {}
        self.closed = 0

    def _live(self, node: str, now: float) -> bytes | None:
        found = self.entries.get(node)
        if found is None or found[1] <= now:
            self.entries.pop(node, None)
            return None
        return found[0]

    def exchange(self, node: str, body: bytes, ttl: float) -> Deferred[Answer]:
        self.exchanges[node] = self.exchanges.get(node, 0) + 1
        if self.down:
            return fail(StoreError("Connection was refused by other side"))
        now = self.clock.seconds()
        before = self._live(node, now)
        self.entries[node] = (body, now + ttl)
        others = []
        for name in sorted(self.entries):
            if name != node and self._live(name, now) is not None:
                others.append(
                    Entry(name, self.entries[name][0], self.entries[name][1] - now)
                )
        answer = Answer(tuple(others), before)
        if self.hold:
            d: Deferred[Answer] = Deferred()
            self.held.append((d, answer))
            return d
        return succeed(answer)

    def leave(self, node: str) -> Deferred[None]:
        self.entries.pop(node, None)
        return succeed(None)

    def close(self) -> None:
        self.closed += 1

    def put(self, node: str, body: bytes, ttl: float) -> None:
        """Write an entry as some other process would."""
        self.entries[node] = (body, self.clock.seconds() + ttl)
