"""
Tests for L{txlb.tcpproxy}: TCP mode on a memory reactor, with string
transports (to see producer states) and iosim (to complete or fail backend
connections).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.test.iosim import ConnectionCompleter
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Harness as _Harness


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


def Harness(**kw: Any) -> _Harness:
    return _Harness(mode="tcp", **kw)


class ConnectTests(SynchronousTestCase):
    def test_paused_until_connected(self) -> None:
        """The client is not read until its backend connection is up; then
        both read, and each transport is the other's streaming producer."""
        h = Harness()
        client = h.client()
        self.assertEqual(client.transport.producerState, "paused")
        self.assertEqual(h.connects(), [("127.0.0.1", 9001, 3.0)])
        self.assertEqual(h.active(), [1, 0])
        backend = h.accept()
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(backend.transport.producerState, "producing")
        self.assertIs(client.transport.producer, backend.transport)
        self.assertIs(backend.transport.producer, client.transport)
        self.assertTrue(client.transport.streaming)
        self.assertTrue(backend.transport.streaming)

    def test_relays_both_ways(self) -> None:
        """Bytes flow both ways unchanged."""
        h = Harness()
        client = h.client()
        backend = h.accept()
        client.send(b"ping")
        backend.send(b"pong")
        self.assertEqual(backend.received(), b"ping")
        self.assertEqual(client.received(), b"pong")

    def test_least_connections(self) -> None:
        """Each new client goes to the backend with the fewest connections,
        which count until they close."""
        h = Harness(backends=3)
        clients = [h.client() for _ in range(3)]
        self.assertEqual([c[1] for c in h.connects()], [9001, 9002, 9003])
        backends = [h.accept() for _ in range(3)]
        self.assertEqual(h.active(), [1, 1, 1])
        clients[1].transport.loseConnection()
        self.assertEqual(h.active(), [1, 0, 1])
        h.client()
        self.assertEqual(h.connects()[-1][1], 9002)
        self.assertEqual(h.active(), [1, 1, 1])
        self.assertTrue(backends[1].transport.disconnecting)

    def test_connect_time_observed(self) -> None:
        """The stats hear of each connection attempt: its backend, 200 and
        the time it took to connect, or 502 and the time until it failed."""
        h = Harness()
        h.client()
        h.reactor.advance(0.25)
        ConnectionCompleter(h.reactor).failOnce()
        h.reactor.advance(0.5)
        h.accept()
        self.assertEqual(h.observed, [("b0", 502), ("b1", 200)])
        self.assertEqual(h.seconds, [0.25, 0.5])

    def test_early_data_kept(self) -> None:
        """Bytes a transport delivered before the pause took effect reach the
        backend first."""
        h = Harness()
        client = h.client()
        client.send(b"early ")
        backend = h.accept()
        client.send(b"late")
        self.assertEqual(backend.received(), b"early late")

    def test_input_ended_while_connecting(self) -> None:
        """A client that sent its request and shut its write side before the
        backend connected: the backend gets the request and the end."""
        h = Harness()
        client = h.client()
        client.send(b"GET\n")
        client.proto.readConnectionLost()
        backend = h.accept()
        self.assertEqual(backend.received(), b"GET\n")
        self.assertTrue(backend.transport.write_closed)
        backend.send(b"answer")
        self.assertEqual(client.received(), b"answer")

    def test_no_backend(self) -> None:
        """With no healthy backend the client is closed at once."""
        h = Harness(backends=1)
        h.registry.set_healthy(h.registry.backends[0], False, "test")
        client = h.client()
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(h.connects(), [])


class MaxClientsTests(SynchronousTestCase):
    def test_over_max_clients_closed_at_once(self) -> None:
        """
        A connection over max_clients is closed as accepted, with no
        backend contacted; once one closes, the next is relayed again.
        """
        h = Harness(backends=1, extra="max_clients = 2")
        first, _ = h.client(), h.client()
        third = h.client()
        self.assertTrue(third.transport.disconnecting)
        self.assertEqual(len(h.connects()), 2)
        self.assertEqual(h.proxy.limit.refused, 1)
        first.transport.loseConnection()
        fourth = h.client()
        self.assertFalse(fourth.transport.disconnecting)
        self.assertEqual(len(h.connects()), 3)


class QueueTests(SynchronousTestCase):
    def harness(self, extra: str = "") -> Harness:
        return Harness(
            backends=1,
            extra="queue_timeout = 3s\n" + extra,
            backend_extra="max_connections = 1",
        )

    def test_waits_for_a_free_backend(self) -> None:
        """
        A client beyond max_connections waits, paused and without a
        connection attempt, until a connection ends; then it connects.
        """
        h = self.harness()
        first = h.client()
        backend = h.accept()
        second = h.client()
        self.assertEqual(second.transport.producerState, "paused")
        self.assertFalse(second.transport.disconnecting)
        self.assertEqual(h.connects(), [])
        self.assertEqual((h.active(), len(h.registry.queue)), ([1], 1))
        backend.transport.loseConnection()
        self.assertTrue(first.transport.disconnecting)
        self.assertEqual(h.connects(), [("127.0.0.1", 9001, 3.0)])
        self.assertEqual((h.active(), len(h.registry.queue)), ([1], 0))
        second_backend = h.accept()
        self.assertEqual(second.transport.producerState, "producing")
        second.send(b"late")
        self.assertEqual(second_backend.received(), b"late")

    def test_queue_timeout_closes(self) -> None:
        """A client that waits queue_timeout is closed; nothing leaks."""
        h = self.harness()
        h.client()
        h.accept()
        second = h.client()
        h.reactor.advance(2.9)
        self.assertFalse(second.transport.disconnecting)
        h.reactor.advance(0.1)
        self.assertTrue(second.transport.disconnecting)
        self.assertEqual(h.connects(), [])
        self.assertEqual((h.active(), len(h.registry.queue)), ([1], 0))
        self.assertEqual(h.registry.queue.timeouts, 1)

    def test_client_leaves_while_queued(self) -> None:
        """A queued client that goes away leaves the queue at once."""
        h = self.harness()
        h.client()
        backend = h.accept()
        second = h.client()
        second.transport.loseConnection()
        self.assertEqual(len(h.registry.queue), 0)
        backend.transport.loseConnection()
        self.assertEqual(h.connects(), [])
        self.assertEqual(h.active(), [0])
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_queue_full_closes_at_once(self) -> None:
        """With the queue full a client is closed at once."""
        h = self.harness("queue_size = 1")
        h.client()
        h.accept()
        h.client()
        third = h.client()
        self.assertTrue(third.transport.disconnecting)
        self.assertEqual(h.registry.queue.full_rejections, 1)
        self.assertEqual(len(h.registry.queue), 1)


class FailoverTests(SynchronousTestCase):
    def test_refused_fails_over(self) -> None:
        """A backend that refuses is counted as failed and the next one
        connects; bytes then reach it (iosim)."""
        h = Harness()
        h.reactor.listenTCP(9002, Factory.forProtocol(Echo))
        client = h.client()
        completer = ConnectionCompleter(h.reactor)
        completer.failOnce(Failure(ConnectionRefusedError()))
        self.assertEqual(h.failures(), [1, 0])
        self.assertEqual(h.active(), [0, 1])
        self.assertEqual(h.observed, [("b0", 502)])
        self.assertEqual([b.retries for b in h.registry.backends], [1, 0])
        self.assertEqual(client.transport.producerState, "paused")
        pump = completer.succeedOnce()
        assert pump is not None
        self.assertEqual(client.transport.producerState, "producing")
        client.send(b"echo me")
        pump.flush()
        self.assertEqual(client.received(), b"echo me")

    def test_connect_timeout_fails_over(self) -> None:
        """A backend that does not connect within connect_timeout is given
        up (its connector stopped) and the next one is tried; if it connects
        late, that connection is dropped."""
        h = Harness()
        client = h.client()
        connector = h.reactor.connectors[0]
        h.reactor.advance(1.9)
        self.assertEqual(len(h.connects()), 1)
        h.reactor.advance(0.1)
        self.assertTrue(connector.stoppedConnecting)
        self.assertEqual([c[1] for c in h.connects()], [9001, 9002])
        self.assertEqual(h.failures(), [1, 0])
        self.assertEqual(h.active(), [0, 1])
        late = h.accept(0)
        self.assertTrue(late.transport.disconnected)
        backend = h.accept(0)
        client.send(b"x")
        self.assertEqual(backend.received(), b"x")
        self.assertEqual(h.reactor.getDelayedCalls()[0].getTime(), 62.0)

    def test_every_backend_fails(self) -> None:
        """When retries are used up the client is closed; nothing leaks."""
        h = Harness(backends=3, extra="retries = 1")
        client = h.client()
        completer = ConnectionCompleter(h.reactor)
        completer.failOnce()
        completer.failOnce()
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(h.connects(), [])
        self.assertEqual(h.active(), [0, 0, 0])
        self.assertEqual(h.failures(), [1, 1, 0])
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        self.assertEqual([b.retries for b in h.registry.backends], [1, 0, 0])

    def test_never_retries_a_tried_backend(self) -> None:
        """Failover skips backends already tried for this client, even when
        they are the least loaded."""
        h = Harness(backends=2, extra="retries = 5")
        client = h.client()
        completer = ConnectionCompleter(h.reactor)
        completer.failOnce()
        completer.failOnce()
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(h.failures(), [1, 1])

    def test_client_leaves_while_connecting(self) -> None:
        """A client gone before its backend connects frees the lease, stops
        the attempt and its timer; a late connection is dropped."""
        h = Harness()
        client = h.client()
        connector = h.reactor.connectors[0]
        client.transport.loseConnection()
        self.assertEqual(h.active(), [0, 0])
        self.assertEqual(h.failures(), [0, 0])
        self.assertTrue(connector.stoppedConnecting)
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        self.assertEqual(h.observed, [])
        late = h.accept()
        self.assertTrue(late.transport.disconnected)


class CloseTests(SynchronousTestCase):
    def test_half_close(self) -> None:
        """The client's end of input half-closes the backend; the answer
        still comes back; the lease is released once both are gone."""
        h = Harness()
        client = h.client()
        backend = h.accept()
        client.send(b"request")
        client.proto.readConnectionLost()
        self.assertTrue(backend.transport.write_closed)
        self.assertFalse(client.transport.disconnecting)
        backend.send(b"response")
        self.assertEqual(client.received(), b"response")
        self.assertEqual(h.active(), [1, 0])
        backend.proto.readConnectionLost()
        self.assertTrue(client.transport.disconnecting)
        self.assertTrue(backend.transport.disconnecting)
        self.assertEqual(h.active(), [0, 0])

    def test_backend_closes(self) -> None:
        """A backend that closes closes the client, and the lease is
        released exactly once."""
        h = Harness()
        client = h.client()
        backend = h.accept()
        backend.transport.loseConnection()
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(h.active(), [0, 0])
        client.proto.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(h.active(), [0, 0])
        self.assertEqual(h.registry.backends[0].failures, 0)

    def test_backend_reset_is_a_failure(self) -> None:
        """A backend that resets a relayed connection mid-stream fails it:
        counted towards passive ejection (HAProxy's observe layer4), the
        client closed, the lease released once; the stats, which counted
        the connection when it began, are not told twice."""
        h = Harness(extra="[outlier]\nconsecutive_failures = 2")
        for _ in range(4):  # b0, b1, b0 (ejected), b1 (not: half are out)
            client = h.client()
            backend = h.accept()
            client.send(b"request")
            backend.proto.connectionLost(Failure(ConnectionLost("reset by peer")))
            self.assertTrue(client.transport.disconnecting)
            client.proto.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(h.active(), [0, 0])
        self.assertEqual(h.failures(), [2, 2])
        self.assertEqual([b.ejected for b in h.registry.backends], [True, False])
        self.assertEqual(h.observed, [("b0", 200), ("b1", 200)] * 2)

    def test_closes_are_not_failures(self) -> None:
        """A backend's clean close, a connection the client ended first (the
        backend's end then cannot be told from a reset) and an idle close
        fail nothing, and a good connection ends a run of failures."""
        h = Harness(backends=1, extra="[outlier]\nconsecutive_failures = 2")
        b0 = h.registry.backends[0]
        client = h.client()
        backend = h.accept()
        backend.proto.connectionLost(Failure(ConnectionLost("reset by peer")))
        client.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(b0.consecutive_failures, 1)
        client = h.client()
        backend = h.accept()
        client.proto.connectionLost(Failure(ConnectionLost("client went")))
        backend.proto.connectionLost(Failure(ConnectionLost("after the client")))
        self.assertEqual((b0.failures, b0.consecutive_failures), (1, 0))
        client = h.client()
        backend = h.accept()
        backend.proto.connectionLost(Failure(ConnectionDone()))
        client.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(b0.failures, 1)
        self.assertFalse(b0.ejected)

    def test_idle_timeout(self) -> None:
        """A connection with no traffic for idle_timeout is closed and its
        lease released."""
        h = Harness()
        client = h.client()
        backend = h.accept()
        h.reactor.advance(59)
        client.send(b"still here")
        h.reactor.advance(59)
        self.assertFalse(client.transport.disconnecting)
        h.reactor.advance(1)
        self.assertTrue(client.transport.disconnecting)
        self.assertTrue(backend.transport.disconnecting)
        self.assertEqual(h.active(), [0, 0])
        self.assertEqual(h.reactor.getDelayedCalls(), [])


class ProxyProtocolTests(SynchronousTestCase):
    def test_v1(self) -> None:
        """A v1 backend gets the text header before the client's bytes."""
        h = Harness(backends=1, backend_extra="proxy_protocol = v1")
        client = h.client()
        backend = h.accept()
        client.send(b"hello")
        self.assertEqual(
            backend.received(),
            b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 8080\r\nhello",
        )

    def test_v2(self) -> None:
        """A v2 backend gets the binary header before the client's bytes."""
        h = Harness(backends=1, backend_extra="proxy_protocol = v2")
        client = h.client()
        backend = h.accept()
        client.send(b"hello")
        self.assertEqual(
            backend.received(),
            bytes.fromhex("0D0A0D0A000D0A515549540A2111000CC00002077F000001")
            + (4000).to_bytes(2, "big")
            + (8080).to_bytes(2, "big")
            + b"hello",
        )

    def test_none(self) -> None:
        """A backend without the setting gets only the client's bytes."""
        h = Harness(backends=1)
        client = h.client()
        backend = h.accept()
        client.send(b"hello")
        self.assertEqual(backend.received(), b"hello")
