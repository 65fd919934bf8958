"""
How connections spread over the workers: each worker accepts on its copy of
every listening socket, one connection at a time (up to L{BATCH} a
readiness event), and lets a connection go by while it has more busy
connections than the least loaded worker plus L{SLACK}: that worker, woken
by the same readiness, takes it.  Only a worker passed over L{PASSES}
times in a row stops reading for a moment (L{PAUSE}); pausing at once
costs a millisecond each time, and two workers paused together starve the
backlog (a connection per request ran at a third of one worker's rate).
Without any of this, a burst of new connections (ab, or nginx opening its
upstream keep-alive connections) goes mostly to the first worker to wake,
whose accept loop takes up to a hundred at once.

A keep-alive connection idle between requests for over a L{SWEEP} is not
busy: counted, a worker holding many (nginx keeps up to C{keepalive}
upstream connections) would pass every new connection to the others.  Each
worker publishes its busy count in the shared file whenever it changes
(L{CountedConnections}): when a connection opens or closes, and when a
sweep finds one idle or an idle one wakes; never per request.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from txlb.workers.shm import NOT_ACCEPTING, Counts

__all__ = [
    "BATCH",
    "PASSES",
    "PAUSE",
    "SLACK",
    "SWEEP",
    "CountedConnections",
    "balance_accepts",
]

SLACK = 1
"""Connections a worker may have above the least loaded before it pauses."""

PAUSE = 0.001
"""Seconds a worker that has too many connections stops accepting."""

BATCH = 32
"""Connections a worker accepts at most per readiness event."""

PASSES = 64
"""Readiness events a worker lets go by before it pauses."""

SWEEP = 0.1
"""Seconds between the sweeps that count resting connections as idle."""


class CountedConnections(set[Any]):
    """
    A worker's open client connections; the busy ones counted in the shared
    file.  A keep-alive connection is idle, and not counted, once it has
    rested between requests through a whole L{SWEEP} (its L{IdleConnections}
    side hears of it resting and working again): a client that sends its
    next request at once never leaves the count.
    """

    def __init__(self, counts: Counts, worker: int) -> None:
        super().__init__()
        self._cells = counts.cells
        self._cell = counts.connections_cell(worker)
        self._accepting = False
        # Rested since the last sweep; rested since the one before; idle.
        self._fresh: set[Any] = set()
        self._older: set[Any] = set()
        self._idle: set[Any] = set()

    @property
    def busy(self) -> int:
        return len(self) - len(self._idle)

    def add(self, connection: Any) -> None:
        super().add(connection)
        self._publish()

    def discard(self, connection: Any) -> None:
        super().discard(connection)
        self._fresh.discard(connection)
        self._older.discard(connection)
        self._idle.discard(connection)
        self._publish()

    def resting(self, connection: Any) -> None:
        if connection in self:
            self._fresh.add(connection)

    def working(self, connection: Any) -> None:
        self._fresh.discard(connection)
        self._older.discard(connection)
        if connection in self._idle:
            self._idle.discard(connection)
            self._publish()

    def sweep(self) -> None:
        """Every L{SWEEP}: those resting since the sweep before are idle."""
        if self._older:
            self._idle |= self._older
            self._publish()
        self._older, self._fresh = self._fresh, set()

    def _publish(self) -> None:
        self._cells[self._cell] = self.busy if self._accepting else NOT_ACCEPTING

    def accepting(self, on: bool) -> None:
        """Start or stop counting this worker among those accepting."""
        self._accepting = on
        self._publish()


def balance_accepts(
    port: Any, counts: Counts, mine: CountedConnections, clock: IReactorTime
) -> None:
    """Make C{port} accept as the module docstring says."""
    accept = port.doRead

    def paused_again() -> None:
        if port.connected and not port.disconnecting:
            port.startReading()

    passed = 0

    def doRead() -> None:
        # One accept at a time, the balance judged before each (the count
        # grows as each connection is made), up to BATCH an event: one an
        # event would cap a busy worker at one per reactor turn.
        nonlocal passed
        for accepted in range(BATCH):
            if mine.busy > counts.fewest_connections() + SLACK:
                if accepted == 0:
                    # The less loaded worker is woken by the same readiness:
                    # leave the connection to it, a while without waiting
                    # (pausing costs a millisecond, and two workers pausing
                    # at once starve the backlog), then pause (it may be
                    # busy for longer).
                    passed += 1
                    if passed >= PASSES:
                        passed = 0
                        port.stopReading()
                        clock.callLater(PAUSE, paused_again)
                return
            passed = 0
            had = len(mine)
            port.numberAccepts = 1
            accept()
            if len(mine) == had or not port.connected:
                return  # none waiting (or refused, or the port closed)

    port.doRead = doRead
