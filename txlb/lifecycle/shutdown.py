"""
Graceful shutdown.

L{Lifecycle} is the top service: when twistd stops it (SIGTERM), it is
C{draining} at once (C{/healthz} says 503, so an L4 tier stops sending new
connections), the listening ports stay open for C{shutdown_grace} (0 by
default; HAProxy's C{grace}) and then close, and the open client
connections are drained:
an HTTP connection is closed as soon as it has no request in progress (a
keep-alive client never holds the shutdown up) and one with a request in
progress is closed when its response is done; a TCP-mode connection runs
until it ends.  Whatever is still open after C{shutdown_timeout} is aborted.
Only then do the other services (health checks, backend pools, access log,
the fleet) stop, so every drained request is logged; listeners kept for the
drain (the stats port, L{Lifecycle.listen_until_drained}) close with them.
"""

from __future__ import annotations

import signal
from collections.abc import Collection
from typing import Any, Protocol

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

__all__ = ["TICK", "Drainable", "Lifecycle"]

# How often a drain looks at the connections left.  An idle HTTP connection
# is closed once it has been idle at two looks in a row, so a request whose
# bytes were on their way when the shutdown began is still read and served.
TICK = 0.1


def _stop_all(services: list[Any]) -> Deferred[Any]:
    return DeferredList([maybeDeferred(s.stopService) for s in services])


class Lifecycle(MultiService):
    """
    The balancer's top service: on stop, listening ports first (after
    the grace), then a drain of the client connections, then everything
    else.

    @ivar draining: whether it is stopping (C{/healthz} reads it).
    """

    log = Logger()

    def __init__(
        self, clock: IReactorTime, shutdown_timeout: float, grace: float = 0.0
    ) -> None:
        super().__init__()
        self._clock = clock
        self._timeout = shutdown_timeout
        self._grace = grace
        self._watched: list[Collection[Drainable]] = []
        self._late: list[Any] = []
        self.draining = False

    def listen_until_drained(self, listener: Any) -> None:
        """
        Keep C{listener} (a child listener service) open through the drain:
        the stats port, so C{/healthz} answers 503 while it lasts.
        """
        self._late.append(listener)

    def watch(self, connections: Collection[Drainable]) -> None:
        """
        Drain C{connections} (a live collection of client connections) at
        stop.
        """
        self._watched.append(connections)

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        self.draining = True
        services = list(reversed(self.services))
        listeners = [
            s
            for s in services
            if isinstance(s, StreamServerEndpointService) and s not in self._late
        ]
        rest = [s for s in services if s not in listeners]
        d: Deferred[Any]
        if self._grace > 0:
            self.log.info(
                "shutting down: not ready (/healthz says 503); listening for"
                " {grace:g}s more before the drain (shutdown_grace)",
                grace=self._grace,
            )
            d = deferLater(self._clock, self._grace, lambda: None)
            d.addCallback(lambda _: _stop_all(listeners))
        else:
            d = _stop_all(listeners)
        d.addCallback(lambda _: self.drain())
        d.addCallback(lambda _: _stop_all(rest))
        d.addCallback(lambda _: self._exited_cleanly())
        return d

    def _exited_cleanly(self) -> None:
        """
        A drained stop on SIGTERM is a clean exit: status 0.  (twistd would
        otherwise kill itself with the signal it got once the reactor
        stops; its reactor records that signal in C{_exitSignal}.)
        """
        if getattr(self._clock, "_exitSignal", None) == signal.SIGTERM:
            self._clock._exitSignal = None  # type: ignore[attr-defined]

    def _open(self) -> list[Drainable]:
        return [c for connections in self._watched for c in list(connections)]

    def drain(self) -> Deferred[None]:
        """
        Close idle connections, let busy ones finish, abort what is left
        after the timeout.

        @return: fires when no connection is left.
        """
        done: Deferred[None] = Deferred()
        clock = self._clock
        deadline = clock.seconds() + self._timeout
        open_now = self._open()
        self.log.info(
            "shutting down: listening stopped; draining {count} client"
            " connections (at most {timeout:g}s)",
            count=len(open_now),
            timeout=self._timeout,
        )
        idle_before: set[Drainable] = set()

        def look() -> None:
            nonlocal idle_before
            left = self._open()
            if not left:
                self.log.info("shutting down: every connection is closed")
                done.callback(None)
                return
            if clock.seconds() >= deadline:
                self.log.warn(
                    "shutting down: shutdown_timeout ({timeout:g}s) is over;"
                    " aborting {count} connections still open",
                    timeout=self._timeout,
                    count=len(left),
                )
                for connection in left:
                    connection.transport.abortConnection()
                done.callback(None)
                return
            idle_now = set()
            for connection in left:
                if connection.settle():
                    if connection in idle_before:
                        connection.transport.loseConnection()
                    else:
                        idle_now.add(connection)
            idle_before = idle_now
            clock.callLater(min(TICK, max(0.0, deadline - clock.seconds())), look)

        look()
        return done


class Drainable(Protocol):
    """A client connection a shutdown drains."""

    transport: Any

    def settle(self) -> bool:
        """
        Prepare for closing.

        @return: whether it can be closed now (an HTTP connection with no
            proxied request in progress); one with a request in progress
            closes once its response is done, a TCP-mode one when it ends.
        """
