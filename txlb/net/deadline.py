"""
A deadline that moves often but costs one timer: L{Deadline}.

A connection whose deadline moves on every request or every piece of data
(the front end's head and body deadlines, a backend's C{backend_timeout})
would make and cancel a timer each time.  Here one timer serves them all: it
is moved only when a deadline comes sooner than it, and when it fires it
checks the deadline in force, waiting again if that is later.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Deadline"]


class Deadline:
    """
    One deadline on C{clock}: C{on_expired()} is called once it passes.

    @ivar at: when it expires (clock seconds), or 0 while none is set; it
        may be moved later directly (C{at += ...}) at no cost.
    """

    __slots__ = ("_clock", "_on_expired", "_timer", "_timer_at", "at")

    def __init__(self, clock: IReactorTime, on_expired: Callable[[], None]) -> None:
        self._clock = clock
        self._on_expired = on_expired
        self._timer: IDelayedCall | None = None
        self._timer_at = 0.0  # when the timer fires
        self.at = 0.0

    def set(self, seconds: float) -> None:
        """Expire C{seconds} from now (instead of any deadline set before)."""
        at = self._clock.seconds() + seconds
        self.at = at
        timer = self._timer
        if timer is None:
            self._timer = self._clock.callLater(seconds, self._fired)
            self._timer_at = at
        elif self._timer_at > at:
            timer.reset(seconds)
            self._timer_at = at

    def clear(self) -> None:
        """No deadline for now; the timer stays for the next one."""
        self.at = 0.0

    def stop(self) -> None:
        """
        No deadline, and no timer (the connection is gone): for good.  The
        callback is let go, since it is usually the owner's bound method and
        the owner holds this deadline, a reference cycle otherwise.
        """
        self.at = 0.0
        self._on_expired = _nothing
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _fired(self) -> None:
        self._timer = None
        at = self.at
        if not at:
            return
        left = at - self._clock.seconds()
        if left > 0:
            self._timer = self._clock.callLater(left, self._fired)
            self._timer_at = at
            return
        self.at = 0.0
        self._on_expired()


def _nothing() -> None:
    """What a stopped deadline calls, should it be set again."""
