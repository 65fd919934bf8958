"""
Tests for L{txlb.tunnel}: the byte relay shared by TCP mode and WebSocket,
on string transports and a fake clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.relay_support import FakeTCP
from txlb.net.tunnel import READ_SIZE, Relay, Side, adopt


class Joined:
    """A relay between two connected sides on fake TCP transports."""

    def __init__(
        self, idle_timeout: float = 0, client_reading: bool = True, join: bool = True
    ) -> None:
        self.clock = Clock()
        self.ended: list[str] = []
        self.relay = Relay(
            self.clock, idle_timeout, lambda relay, why: self.ended.append(why), "t"
        )
        self.client, self.ct = self._side()
        self.backend, self.bt = self._side()
        self.ct.pauseProducing()
        self.bt.pauseProducing()
        self.client.reading = client_reading
        if join:
            self.relay.join(self.client, self.backend)

    @staticmethod
    def _side() -> tuple[Side, FakeTCP]:
        side = Side()
        transport = FakeTCP()
        transport.protocol = side
        side.makeConnection(transport)
        return side, transport


class RelayTests(SynchronousTestCase):
    def test_side_is_half_closeable(self) -> None:
        """A side says it handles half-close, so TCP reports the end of input
        instead of closing the connection."""
        verifyObject(IHalfCloseableProtocol, Side())

    def test_join_wires_producers_and_resumes(self) -> None:
        """Each transport becomes the other's streaming producer; both read."""
        j = Joined()
        self.assertIs(j.ct.producer, j.bt)
        self.assertIs(j.bt.producer, j.ct)
        self.assertTrue(j.ct.streaming)
        self.assertTrue(j.bt.streaming)
        self.assertEqual(j.ct.producerState, "producing")
        self.assertEqual(j.bt.producerState, "producing")

    def test_large_reads(self) -> None:
        """Both transports read (and buffer before pausing) in large chunks."""
        j = Joined()
        self.assertEqual(j.ct.bufferSize, READ_SIZE)
        self.assertEqual(j.bt.bufferSize, READ_SIZE)
        self.assertGreaterEqual(READ_SIZE, 64 * 1024)

    def test_bytes_both_ways(self) -> None:
        """What one side receives the other writes, counted per direction."""
        j = Joined()
        j.client.dataReceived(b"hello")
        j.backend.dataReceived(b"world!")
        self.assertEqual(j.bt.value(), b"hello")
        self.assertEqual(j.ct.value(), b"world!")
        self.assertEqual((j.relay.bytes_up, j.relay.bytes_down), (5, 6))

    def test_back_pressure(self) -> None:
        """A consumer that pauses its producer pauses the other side's read,
        in each direction, and resuming it resumes the read."""
        j = Joined()
        j.ct.producer.pauseProducing()  # the client's write buffer is full
        self.assertEqual(j.bt.producerState, "paused")
        self.assertEqual(j.ct.producerState, "producing")
        j.ct.producer.resumeProducing()
        self.assertEqual(j.bt.producerState, "producing")
        j.bt.producer.pauseProducing()  # the backend's write buffer is full
        self.assertEqual(j.ct.producerState, "paused")

    def test_half_close(self) -> None:
        """The client's end of input shuts the backend's write side only; the
        answer still flows back; the backend's end then closes both."""
        j = Joined()
        j.client.dataReceived(b"request")
        j.client.readConnectionLost()
        self.assertTrue(j.bt.write_closed)
        self.assertFalse(j.bt.disconnecting)
        self.assertFalse(j.ct.disconnecting)
        # The client no longer produces for the backend: it must never be
        # resumed after its end of input.
        self.assertIsNone(j.bt.producer)
        self.assertIs(j.ct.producer, j.bt)
        j.backend.dataReceived(b"response")
        self.assertEqual(j.ct.value(), b"response")
        self.assertEqual(j.ended, [])
        j.backend.readConnectionLost()
        self.assertTrue(j.ct.disconnecting)
        self.assertTrue(j.bt.disconnecting)
        self.assertEqual(j.ended, ["both sides closed"])

    def test_half_close_backend_first(self) -> None:
        """The backend's end of input shuts the client's write side."""
        j = Joined()
        j.backend.readConnectionLost()
        self.assertTrue(j.ct.write_closed)
        self.assertFalse(j.ct.disconnecting)
        j.client.dataReceived(b"more")
        self.assertEqual(j.bt.value(), b"more")

    def test_input_ended_before_join(self) -> None:
        """A client whose input ended while its backend connected has that
        passed on as soon as the relay starts."""
        j = Joined(client_reading=False)
        self.assertTrue(j.bt.write_closed)
        self.assertIsNone(j.bt.producer)
        self.assertIs(j.ct.producer, j.bt)
        self.assertEqual(j.bt.producerState, "producing")

    def test_full_close_closes_other(self) -> None:
        """A side that closes completely closes the other; the end is
        reported once, when both are gone."""
        j = Joined()
        j.backend.dataReceived(b"last words")
        j.bt.loseConnection()
        self.assertEqual(j.ct.value(), b"last words")
        self.assertTrue(j.ct.disconnecting)
        self.assertEqual(j.ended, ["backend closed"])
        j.backend.connectionLost(Failure(ConnectionLost()))
        j.client.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(j.ended), 1)

    def test_reset_reason(self) -> None:
        """A connection lost with an error names the error."""
        j = Joined()
        j.bt.connected = False  # keep the fake from reporting a clean close
        j.backend.connectionLost(Failure(ConnectionLost("reset by peer")))
        j.ct.loseConnection()
        self.assertEqual(len(j.ended), 1)
        self.assertIn("backend closed: ", j.ended[0])
        self.assertIn("reset by peer", j.ended[0])

    def test_idle_timeout(self) -> None:
        """No byte either way for idle_timeout closes both; traffic moves the
        deadline."""
        j = Joined(idle_timeout=30)
        j.clock.advance(20)
        j.client.dataReceived(b"x")
        j.clock.advance(20)
        self.assertFalse(j.ct.disconnected)
        j.backend.dataReceived(b"y")
        j.clock.advance(29)
        self.assertFalse(j.ct.disconnected)
        j.clock.advance(1)
        self.assertTrue(j.ct.disconnecting)
        self.assertTrue(j.bt.disconnecting)
        self.assertFalse(j.ct.disconnected)
        self.assertEqual(j.ended, ["idle for 30s"])
        self.assertEqual(j.clock.getDelayedCalls(), [])

    def test_idle_then_stuck(self) -> None:
        """Connections closed for idleness that do not go (their write buffer
        never drains) are aborted one idle_timeout later."""
        j = Joined(idle_timeout=30, join=False)

        class Stuck(FakeTCP):
            def loseConnection(self) -> None:
                self.disconnecting = True  # and nothing more: never flushed

            def abortConnection(self) -> None:
                self.disconnected = True
                FakeTCP.loseConnection(self)

        stuck = Stuck()
        stuck.protocol = j.backend
        j.backend.makeConnection(stuck)
        j.relay.join(j.client, j.backend)
        j.clock.advance(30)
        self.assertTrue(stuck.disconnecting)
        self.assertFalse(stuck.disconnected)
        self.assertEqual(j.ended, [])
        j.clock.advance(30)
        self.assertTrue(stuck.disconnected)
        self.assertEqual(j.ended, ["idle for 30s"])
        self.assertEqual(j.clock.getDelayedCalls(), [])

    def test_idle_timer_cancelled(self) -> None:
        """A relay that ends leaves no timer behind."""
        j = Joined(idle_timeout=30)
        j.ct.loseConnection()
        self.assertEqual(j.clock.getDelayedCalls(), [])

    def test_no_idle_timeout(self) -> None:
        """idle_timeout 0 schedules nothing."""
        j = Joined(idle_timeout=0)
        self.assertEqual(j.clock.getDelayedCalls(), [])
        j.client.dataReceived(b"x")
        self.assertEqual(j.clock.getDelayedCalls(), [])

    def test_abort(self) -> None:
        """abort() drops both connections and reports the given reason."""
        j = Joined()
        j.relay.abort("shutting down")
        self.assertTrue(j.ct.disconnected)
        self.assertTrue(j.bt.disconnected)
        self.assertEqual(j.ended, ["shutting down"])

    def test_no_half_close_support(self) -> None:
        """A transport without loseWriteConnection is closed instead."""
        j = Joined(join=False)

        class Plain(FakeTCP):
            loseWriteConnection = None  # type: ignore[assignment]

        plain = Plain()
        plain.protocol = j.backend
        j.backend.makeConnection(plain)
        j.relay.join(j.client, j.backend)
        j.client.readConnectionLost()
        self.assertTrue(plain.disconnecting)
        self.assertTrue(j.ct.disconnecting)


class AdoptTests(SynchronousTestCase):
    def test_plain_transport(self) -> None:
        """A TCP-like transport gets the side as its protocol."""
        transport: Any = FakeTCP()
        transport.protocol = object()
        side = Side()
        adopt(transport, side)
        self.assertIs(transport.protocol, side)
        self.assertIs(side.transport, transport)

    def test_wrapper(self) -> None:
        """A protocol wrapper (TLS) gets the side as its wrapped protocol."""

        class Wrapper(FakeTCP):
            wrappedProtocol: object = None

        transport = Wrapper()
        side = Side()
        adopt(transport, side)
        self.assertIs(transport.wrappedProtocol, side)
        self.assertIs(side.transport, transport)
