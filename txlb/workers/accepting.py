"""
How connections spread over the workers: each worker accepts on its copy of
every listening socket, one connection at a time (up to L{BATCH} a
readiness event), and stops for a moment (L{PAUSE}) while it has more busy
connections than the least loaded worker accepting plus L{SLACK}.  Without
this, a burst of new connections (ab, or nginx opening its upstream
keep-alive connections) goes mostly to the first worker to wake, whose
accept loop takes up to a hundred at once; with it, a burst of 20 splits
about 10 and 10 (README, "Worker processes", has the figures).  A paused
worker is no measure for the others, so two workers never both wait for
each other while connections queue in the backlog.  A keep-alive
connection resting between requests is not busy: counted, a worker holding
many idle ones (nginx keeps up to C{keepalive} of them) would pass every
new connection to the others.  Each worker publishes its busy count in the
shared file whenever it changes (L{CountedConnections}): when a connection
opens or closes, when a keep-alive one rests or wakes (HTTP mode; once per
request at most), and when it pauses.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from txlb.workers.shm import NOT_ACCEPTING, Counts

__all__ = ["BATCH", "PAUSE", "SLACK", "CountedConnections", "balance_accepts"]

SLACK = 1
"""Connections a worker may have above the least loaded before it pauses."""

PAUSE = 0.001
"""Seconds a worker that has too many connections stops accepting."""

BATCH = 32
"""Connections a worker accepts at most per readiness event."""


class CountedConnections(set[Any]):
    """
    A worker's open client connections; the busy ones (not resting between
    requests) counted in the shared file.  Its L{IdleConnections} side
    hears of the resting ones.
    """

    def __init__(self, counts: Counts, worker: int) -> None:
        super().__init__()
        self._cells = counts.cells
        self._cell = counts.connections_cell(worker)
        self._resting: set[Any] = set()
        self._accepting = False
        self._paused = 0

    @property
    def busy(self) -> int:
        return len(self) - len(self._resting)

    def add(self, connection: Any) -> None:
        super().add(connection)
        self._publish()

    def discard(self, connection: Any) -> None:
        super().discard(connection)
        self._resting.discard(connection)
        self._publish()

    def resting(self, connection: Any) -> None:
        if connection in self:
            self._resting.add(connection)
            self._publish()

    def working(self, connection: Any) -> None:
        if connection in self._resting:
            self._resting.discard(connection)
            self._publish()

    def _publish(self) -> None:
        counted = self._accepting and not self._paused
        self._cells[self._cell] = self.busy if counted else NOT_ACCEPTING

    def accepting(self, on: bool) -> None:
        """Start or stop counting this worker among those accepting."""
        self._accepting = on
        self._publish()

    def pause(self) -> None:
        """
        One of this worker's ports stops accepting for a moment: until it
        resumes, the worker is not among those the others compare with, so
        two workers never both wait for the other to take the backlog.
        """
        self._paused += 1
        self._publish()

    def resume(self) -> None:
        self._paused -= 1
        self._publish()


def balance_accepts(
    port: Any, counts: Counts, mine: CountedConnections, clock: IReactorTime
) -> None:
    """Make C{port} accept as the module docstring says."""
    accept = port.doRead

    def paused_again() -> None:
        mine.resume()
        if port.connected and not port.disconnecting:
            port.startReading()

    def doRead() -> None:
        if mine.busy > counts.fewest_connections() + SLACK:
            port.stopReading()
            mine.pause()
            clock.callLater(PAUSE, paused_again)
            return
        # One accept at a time, the balance judged again after each (the
        # count grows as each connection is made), up to BATCH an event:
        # one an event would cap a busy worker at one per reactor turn.
        for _ in range(BATCH):
            had = len(mine)
            port.numberAccepts = 1
            accept()
            if len(mine) == had or not port.connected:
                return  # none waiting (or refused, or the port closed)
            if mine.busy > counts.fewest_connections() + SLACK:
                return

    port.doRead = doRead
