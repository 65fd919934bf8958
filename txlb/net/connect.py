"""
One attempt to connect to one backend, for both modes: the HTTP pool's new
connections and TCP mode's relays.

The attempt has its own timeout on the injected clock; whatever happens,
its owner hears at most once, through C{on_made(protocol)} or
C{on_failed(why)}.  A connection that arrives after the owner stopped
waiting (L{ConnectAttempt.abandon}) goes to C{on_late}, which pools or
drops it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import NotConnectingError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from txlb.config import Address

__all__ = ["ConnectAttempt"]


class ConnectAttempt(ClientFactory):
    """
    Connects to C{address}; the protocol it builds must call L{made} with
    itself from its C{connectionMade} (its C{connected_by} attribute names
    the attempt).
    """

    noisy = False

    def __init__(
        self,
        build: Callable[[], Protocol],
        on_made: Callable[[Any], None],
        on_failed: Callable[[str], None],
        on_late: Callable[[Any], None],
    ) -> None:
        self._build = build
        self._on_made: Callable[[Any], None] | None = on_made
        self._on_failed = on_failed
        self._on_late = on_late
        self._connector: IConnector | None = None
        self._timer: IDelayedCall | None = None
        self._address = ""

    def start(
        self,
        reactor: IReactorTCP,
        clock: IReactorTime,
        address: Address,
        timeout: float,
    ) -> None:
        """
        Begin connecting; fail with a timeout after C{timeout} seconds.

        @param address: a TCP address, or with port 0 a UNIX socket's path.
        """
        self._address = str(address)
        self._timer = clock.callLater(timeout, self._timed_out, timeout)
        # A backstop: the attempt's own timer (on the injected clock)
        # normally ends it first.
        if address.port == 0:
            # A UNIX socket's path (a worker's way to its supervisor).
            self._connector = reactor.connectUNIX(  # type: ignore[attr-defined]
                address.host, self, timeout=timeout + 1
            )
            return
        self._connector = reactor.connectTCP(
            address.host, address.port, self, timeout=timeout + 1
        )

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        protocol = self._build()
        protocol.connected_by = self  # type: ignore[attr-defined]
        return protocol

    def made(self, protocol: Protocol) -> None:
        """The connection is up (called by the protocol)."""
        self._stop_timer()
        on_made, self._on_made = self._on_made, None
        if on_made is not None:
            on_made(protocol)
        else:
            self._on_late(protocol)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self._stop_timer()
        self._fail(f"cannot connect to {self._address}: {reason.getErrorMessage()}")

    def abandon(self, stop: bool = False) -> None:
        """
        The owner no longer waits: it hears nothing more.

        @param stop: stop connecting too (else a connection that arrives
            goes to C{on_late}).
        """
        self._on_made = None
        if stop:
            self._stop_timer()
            self._stop_connecting()

    def _timed_out(self, timeout: float) -> None:
        self._timer = None
        waiting = self._on_made is not None
        self._on_made = None  # stopping fails the connector: say why first
        self._stop_connecting()
        if waiting:
            self._on_failed(
                f"cannot connect to {self._address}: no connection within {timeout:g}s"
            )

    def _fail(self, why: str) -> None:
        if self._on_made is not None:
            self._on_made = None
            self._on_failed(why)

    def _stop_connecting(self) -> None:
        connector, self._connector = self._connector, None
        if connector is not None:
            try:
                connector.stopConnecting()
            except NotConnectingError:
                pass

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
