"""
The limit on client connections (C{max_clients}), shared by the HTTP front
end and TCP mode: HAProxy's C{maxconn}.
"""

from __future__ import annotations

from collections.abc import Sized

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["ClientLimit"]


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
