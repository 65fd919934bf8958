"""SIGHUP: read the configuration file again, in the reactor thread."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from txlb.lifecycle.reload import Reloader

__all__ = ["ReloadOnSignal"]


class ReloadOnSignal(Service):
    """
    Reloads the configuration file on SIGHUP, in the reactor thread.

    The handler is installed once the reactor runs (after twistd's own) and
    the previous one is put back at stop.
    """

    log = Logger()

    def __init__(
        self,
        reloader: Reloader,
        path: str,
        reactor: Any,
        signum: int = signal.SIGHUP,
    ) -> None:
        self.reloader = reloader
        self._path = path
        self._reactor = reactor
        self._signum = signum
        self._previous: Any = None
        self._installed = False

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        if not self.running:
            return
        self._previous = signal.signal(self._signum, self._received)
        self._installed = True

    def _received(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of whatever the main
        # thread was doing: hand the work to the reactor.
        self._reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """Re-read the file and apply it (what SIGHUP does)."""
        self.log.info("reloading {path}", path=self._path)
        self.reloader.reload(self._path)

    def stopService(self) -> None:
        super().stopService()
        if self._installed:
            signal.signal(self._signum, self._previous)
            self._installed = False
