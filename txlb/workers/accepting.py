"""
How connections spread over the workers: each worker accepts on its copy of
every listening socket, one connection per readiness event, and stops for a
moment while it has more connections than the least loaded worker plus
L{SLACK}.  Without this, a burst of new connections (ab, or nginx opening
its upstream keep-alive connections) goes mostly to the first worker to
wake, whose accept loop takes up to a hundred at once; with it, a burst of
20 splits about 10 and 10 (README, "Worker processes", has the figures).
Each worker publishes its connection count in the shared file whenever it
changes (L{CountedConnections}): once per connection, never per request.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from txlb.workers.shm import NOT_ACCEPTING, Counts

__all__ = ["PAUSE", "SLACK", "CountedConnections", "balance_accepts"]

SLACK = 1
"""Connections a worker may have above the least loaded before it pauses."""

PAUSE = 0.001
"""Seconds a worker that has too many connections stops accepting."""


class CountedConnections(set[Any]):
    """A worker's open client connections, their number in the shared file."""

    def __init__(self, counts: Counts, worker: int) -> None:
        super().__init__()
        self._cells = counts.cells
        self._cell = counts.connections_cell(worker)

    def add(self, connection: Any) -> None:
        super().add(connection)
        self._publish()

    def discard(self, connection: Any) -> None:
        super().discard(connection)
        self._publish()

    def _publish(self) -> None:
        if self._cells[self._cell] != NOT_ACCEPTING:
            self._cells[self._cell] = len(self)

    def accepting(self, on: bool) -> None:
        """Start or stop counting this worker among those accepting."""
        self._cells[self._cell] = len(self) if on else NOT_ACCEPTING


def balance_accepts(
    port: Any, counts: Counts, mine: CountedConnections, clock: IReactorTime
) -> None:
    """Make C{port} accept as the module docstring says."""
    accept = port.doRead

    def paused_again() -> None:
        if port.connected:
            port.startReading()

    def doRead() -> None:
        if len(mine) > counts.fewest_connections() + SLACK:
            port.stopReading()
            clock.callLater(PAUSE, paused_again)
            return
        port.numberAccepts = 1
        accept()

    port.doRead = doRead
