"""
Server-Sent Events for C{/api/events}: one snapshot a tick, to every open
stream, and a stream whose client lags skips events instead of piling them
up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from zope.interface import implementer

__all__ = ["EventStream", "Subscriber"]


@implementer(IPushProducer)
class Subscriber:
    """One open C{/api/events} response; skips events while its client lags."""

    def __init__(self, request: IRequest) -> None:
        self.request = request
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class EventStream:
    """
    Sends one snapshot to every subscriber C{rate} times a second, while
    there are subscribers.  The snapshot is made once per tick, whatever
    the number of subscribers.
    """

    log = Logger()

    def __init__(
        self, snapshot: Callable[[], dict[str, Any]], clock: IReactorTime, rate: float
    ) -> None:
        self._snapshot = snapshot
        self._interval = 1.0 / rate
        self._subscribers: list[Subscriber] = []
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)
        subscriber.request.registerProducer(subscriber, True)  # type: ignore[attr-defined]
        retry = int(max(1.0, self._interval * 2) * 1000)
        subscriber.request.write(b"retry: %d\n\n" % retry)
        subscriber.request.write(self._event())
        if not self._loop.running:
            self._loop.start(self._interval, now=False)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
        if not self._subscribers and self._loop.running:
            self._loop.stop()

    def _event(self) -> bytes:
        self._sequence += 1
        data = json.dumps(self._snapshot(), separators=(",", ":"))
        return b"id: %d\nevent: stats\ndata: %s\n\n" % (
            self._sequence,
            data.encode("utf-8"),
        )

    def _tick(self) -> None:
        try:
            event = self._event()
            for subscriber in list(self._subscribers):
                if not subscriber.paused:
                    subscriber.request.write(event)
        except Exception:
            # A LoopingCall stops for good after an error: never let it.
            self.log.failure("sending stats events failed")
