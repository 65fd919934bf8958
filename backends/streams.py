"""
A deterministic byte stream written with back-pressure.

The C{/_demo/bytes} route sends C{n} bytes of a repeating pattern.  Byte
C{i} is C{PATTERN[i % len(PATTERN)]}, so a client can check what it got
without the server holding the body: the producer below writes one chunk at
a time and stops whenever the transport says its buffer is full.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from zope.interface import implementer

__all__ = ["PATTERN", "PatternProducer", "pattern"]

PATTERN = b"0123456789abcdef"


def pattern(offset: int, length: int) -> bytes:
    """The C{length} pattern bytes that start at stream offset C{offset}."""
    start = offset % len(PATTERN)
    repeats = (start + length) // len(PATTERN) + 1
    return (PATTERN * repeats)[start : start + length]


@implementer(IPushProducer)
class PatternProducer:
    """
    Write C{length} pattern bytes to a consumer in C{chunk}-sized writes.

    Register it as a streaming producer, then call L{start}.  It writes
    until paused, stopped or done; L{done} fires when the last byte is
    written (after unregistering).  Cancelling L{done} stops the producer.

    @ivar sent: bytes written so far.
    """

    def __init__(self, consumer: IConsumer, length: int, chunk: int) -> None:
        self._consumer = consumer
        self._length = length
        self._chunk = chunk
        self._block = pattern(0, chunk + len(PATTERN))
        self._paused = False
        self._stopped = False
        self._writing = False
        self.sent = 0
        self.done: Deferred[None] = Deferred(lambda _: self.stopProducing())

    def start(self) -> Deferred[None]:
        """Begin writing; return L{done}."""
        self._write()
        return self.done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write()

    def stopProducing(self) -> None:
        self._stopped = True

    def _write(self) -> None:
        # A write can pause or resume us re-entrantly; the running loop
        # notices, so never start a second one.
        if self._writing:
            return
        self._writing = True
        try:
            while not (self._paused or self._stopped) and self.sent < self._length:
                size = min(self._chunk, self._length - self.sent)
                start = self.sent % len(PATTERN)
                self.sent += size
                self._consumer.write(self._block[start : start + size])
        finally:
            self._writing = False
        if self.sent >= self._length and not self._stopped and not self.done.called:
            self._stopped = True
            self._consumer.unregisterProducer()
            self.done.callback(None)

    def __repr__(self) -> str:
        return f"<PatternProducer {self.sent}/{self._length}>"
