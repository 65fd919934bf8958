"""
Tests for L{txlb.fastio}: the direct-send write and the direct epoll dispatch.

The write tests use a real loopback TCP connection whose balancer end is a
real C{tcp.Server} on a L{MemoryReactor}: the bytes really go through the
kernel, and the reactor's reader and writer sets show whether the transport
asked to be polled for writing.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.logger import Logger, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txlb.net import fastio


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


class _Recorder(Protocol):
    def __init__(self) -> None:
        self.lost: list[Failure] = []

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.append(reason)


class WriteTests(SynchronousTestCase):
    """L{fastio.write} on a real TCP connection and on other transports."""

    def setUp(self) -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.peer = socket.create_connection(listener.getsockname())
        ours, address = listener.accept()
        listener.close()
        ours.setblocking(False)
        self.peer.settimeout(5)
        self.reactor = MemoryReactor()
        self.protocol = _Recorder()
        self.transport = tcp.Server(
            ours,
            self.protocol,
            address,
            None,  # type: ignore[arg-type]
            1,
            self.reactor,
        )
        self.protocol.makeConnection(self.transport)
        self.addCleanup(self.peer.close)
        self.addCleanup(ours.close)

    def receive(self, size: int) -> bytes:
        got = b""
        while len(got) < size:
            chunk = self.peer.recv(size - len(got))
            if not chunk:
                break
            got += chunk
        return got

    def test_sends_at_once(self) -> None:
        """With nothing buffered, the bytes are sent by the call itself: the
        transport buffers nothing and never asks to be polled for writing."""
        fastio.write(self.transport, b"hello")
        fastio.write(self.transport, b" world")
        self.assertEqual(self.transport._tempDataLen, 0)
        self.assertEqual(self.transport.dataBuffer, b"")
        self.assertNotIn(self.transport, self.reactor.writers)
        self.assertEqual(self.receive(11), b"hello world")

    def test_rest_is_buffered_in_order(self) -> None:
        """What the kernel does not take is buffered by the transport (which
        then polls for writing); a later write goes after it, not around
        it."""
        big = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than the kernel holds
        fastio.write(self.transport, big)
        buffered = len(self.transport.dataBuffer) + self.transport._tempDataLen
        self.assertTrue(0 < buffered < len(big))
        self.assertIn(self.transport, self.reactor.writers)
        fastio.write(self.transport, b"after")
        self.assertEqual(self.transport._tempDataLen, buffered + 5)
        got = b""
        while len(got) < len(big) + 5:
            self.transport.doWrite()
            got += self.peer.recv(1 << 20)
        self.assertEqual(got, big + b"after")
        self.assertNotIn(self.transport, self.reactor.writers)

    def test_pauses_producer_when_over_buffer_size(self) -> None:
        """A streaming producer is paused once more than C{bufferSize} waits,
        and resumed when the buffer drained, as with C{transport.write}."""
        producer = _Producer()
        self.transport.registerProducer(producer, True)
        self.transport.bufferSize = 64 * 1024
        fastio.write(self.transport, b"x" * (16 << 20))
        self.assertEqual(producer.paused, 1)
        received = 0
        while received < 16 << 20:
            self.transport.doWrite()
            received += len(self.peer.recv(1 << 20))
        self.assertEqual(producer.resumed, 1)

    def test_small_write_does_not_pause(self) -> None:
        """A write the kernel takes whole leaves the producer running."""
        producer = _Producer()
        self.transport.registerProducer(producer, True)
        self.transport.bufferSize = 4
        fastio.write(self.transport, b"more than four")
        self.assertEqual(producer.paused, 0)
        self.assertEqual(self.receive(14), b"more than four")

    def test_lose_connection_after_write(self) -> None:
        """C{loseConnection} right after a write closes once the bytes went."""
        fastio.write(self.transport, b"bye")
        self.transport.loseConnection()
        # Nothing buffered: the transport asks to be polled to close now.
        self.assertIn(self.transport, self.reactor.writers)
        self.assertEqual(self.transport.doWrite(), CONNECTION_DONE)
        self.assertEqual(self.receive(3), b"bye")

    def test_closing_transport_buffers(self) -> None:
        """A transport that is closing or half-closed is written to only by
        its own C{write} (which flushes before the close)."""
        self.transport.loseWriteConnection()
        fastio.write(self.transport, b"late")
        self.assertEqual(self.transport._tempDataLen, 4)

    def test_aborted_transport_sends_nothing(self) -> None:
        """
        After C{abortConnection} (its connectionLost still to come) nothing
        more reaches the peer: at shutdown a proxy may still try to answer
        a client it has just aborted.
        """
        self.transport.reactor = MemoryReactorClock()  # abort schedules its end
        self.transport.abortConnection()
        fastio.write(self.transport, b"late")
        self.assertEqual(self.transport._tempDataLen, 4)  # buffered, never sent
        self.peer.settimeout(0.2)
        try:
            got = self.peer.recv(10)
        except TimeoutError:
            got = b""
        self.assertEqual(got, b"")

    def test_reset_surfaces_as_connection_lost(self) -> None:
        """A send that fails (the peer reset the connection) is left to the
        transport, whose next write attempt reports the lost connection."""
        self.peer.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.peer.close()
        # The first send after a reset may still succeed; the next one fails.
        results = []
        for _ in range(3):
            fastio.write(self.transport, b"data")
            if self.transport._tempDataLen:
                results.append(self.transport.doWrite())
                break
        self.assertEqual(results, [CONNECTION_LOST])

    def test_other_transports_write(self) -> None:
        """A transport that is not a plain TCP connection (TLS, UNIX, a
        test's string transport) gets its own C{write}."""
        transport = StringTransport()
        fastio.write(transport, b"abc")
        self.assertEqual(transport.value(), b"abc")

    def test_tls_transport_writes_through_tls(self) -> None:
        """A TCP connection that started TLS is written through TLS."""
        written = []
        self.transport.TLS = True

        class _TLS:
            def write(self, data: bytes) -> None:
                written.append(data)

        self.transport.protocol = _TLS()  # type: ignore[assignment]
        fastio.write(self.transport, b"secret")
        self.assertEqual(written, [b"secret"])
        self.transport.TLS = False
        self.transport.protocol = self.protocol


class _FakePoller:
    def __init__(self, events: list[tuple[int, int]] | OSError) -> None:
        self.events = events

    def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
        if isinstance(self.events, OSError):
            raise self.events
        return self.events


class _FakeReactor:
    def __init__(self, events: list[tuple[int, int]] | OSError) -> None:
        self._poller = _FakePoller(events)
        self._selectables: dict[int, Any] = {}
        self.dispatched: list[tuple[Any, int, int]] = []

    def _doReadOrWrite(self, selectable: Any, fd: int, event: int) -> None:
        self.dispatched.append((selectable, fd, event))
        if selectable == "boom":
            raise ZeroDivisionError()


class DispatchTests(SynchronousTestCase):
    """The direct C{doPoll}."""

    def test_dispatches_each_event(self) -> None:
        """Every event of a known descriptor goes to C{_doReadOrWrite}; one
        for a descriptor removed meanwhile is skipped."""
        reactor = _FakeReactor([(3, 1), (4, 4), (5, 1)])
        reactor._selectables = {3: "a", 5: "b"}
        fastio._do_poll(reactor, 0.1)
        self.assertEqual(reactor.dispatched, [("a", 3, 1), ("b", 5, 1)])

    def test_interrupted(self) -> None:
        """An interrupted wait returns quietly; other errors are raised."""
        fastio._do_poll(_FakeReactor(OSError(errno.EINTR, "interrupted")), None)
        with self.assertRaises(OSError):
            fastio._do_poll(_FakeReactor(OSError(errno.EBADF, "bad")), None)

    def test_handler_error_is_logged(self) -> None:
        """An exception that escapes a handler is logged and the other
        events are still handled."""
        reactor = _FakeReactor([(3, 1), (4, 1)])
        reactor._selectables = {3: "boom", 4: "b"}
        with capturedLogs() as events:
            fastio._do_poll(reactor, 0)
        self.assertEqual([d[0] for d in reactor.dispatched], ["boom", "b"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(
            [e["log_format"] for e in events], ["unhandled error in an I/O handler"]
        )

    def test_install_only_on_epoll(self) -> None:
        """Other reactors are left alone."""
        reactor = MemoryReactorClock()
        self.assertFalse(fastio.install(reactor))
        self.assertFalse(fastio.installed(reactor))

    def test_install_on_epoll_reactor(self) -> None:
        """On an C{EPollReactor}, events reach the handlers (a real pipe) and
        C{twisted.logger} events emitted by them are delivered."""
        try:
            from twisted.internet.epollreactor import EPollReactor
        except ImportError:
            raise self.skipTest("no epoll") from None
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        self.assertTrue(fastio.install(reactor))
        self.assertTrue(fastio.installed(reactor))
        self.assertTrue(fastio.install(reactor))
        log = Logger(namespace="txlb.test")
        read_end, write_end = socket.socketpair()
        self.addCleanup(read_end.close)
        self.addCleanup(write_end.close)

        class _Reader:
            def __init__(self) -> None:
                self.got: list[bytes] = []

            def fileno(self) -> int:
                return read_end.fileno()

            def doRead(self) -> None:
                data = read_end.recv(100)
                self.got.append(data)
                log.info("read {n} bytes", n=len(data))

            def logPrefix(self) -> str:
                return "reader"

            def connectionLost(self, reason: Failure) -> None:
                pass

        reader = _Reader()
        reactor.addReader(reader)
        self.addCleanup(reactor.removeReader, reader)
        write_end.send(b"ping")
        with capturedLogs() as events:
            reactor.doIteration(1.0)
        self.assertEqual(reader.got, [b"ping"])
        self.assertEqual(
            [(e["log_namespace"], e["n"]) for e in events], [("txlb.test", 4)]
        )
