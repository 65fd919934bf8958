"""
The limit on client connections (C{max_clients}), shared by the HTTP front
end and TCP mode: HAProxy's C{maxconn}; and what a refused connection gets.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any
from typing import Protocol as Interface

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

__all__ = ["ClientLimit", "IdleConnections", "Refuse"]


class IdleConnections(Interface):
    """
    Told when a keep-alive client connection waits between requests and when
    its next request begins (a worker process counts the busy ones).
    """

    def resting(self, connection: Any) -> None: ...
    def working(self, connection: Any) -> None: ...


class ClientLimit:
    """
    Whether one more client connection may be served; counts those refused
    and says so in the log at most once a second.
    """

    log = Logger()

    def __init__(self, max_clients: int, clock: IReactorTime) -> None:
        self.max_clients = max_clients
        self.refused = 0
        self._clock = clock
        self._warned = -1.0

    def admit(self, open_now: Sized) -> bool:
        """Whether a connection may join the C{open_now} ones."""
        if len(open_now) < self.max_clients:
            return True
        self.refused += 1
        now = self._clock.seconds()
        if now - self._warned >= 1.0:
            self._warned = now
            self.log.warn(
                "{count} client connections (max_clients): refusing more",
                count=len(open_now),
            )
        return False


class Refuse(Protocol):
    """
    A connection over C{max_clients}: sent C{answer} (HTTP mode's 503;
    nothing in TCP mode) and closed as soon as it is accepted.
    """

    def __init__(self, answer: bytes = b"") -> None:
        self._answer = answer

    def connectionMade(self) -> None:
        if self._answer:
            self.transport.write(self._answer)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]
