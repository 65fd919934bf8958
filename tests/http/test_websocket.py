"""
Tests for WebSocket (any C{Upgrade}) through the HTTP proxy: the request
keeps its upgrade headers, the backend's 101 reaches the client, and the
two connections are then joined by the byte relay, on a memory reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Backend, Client, Harness
from txlb.net.tunnel import Side

UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nKeep-Alive: timeout=5\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def head_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


class Tunnel:
    """A WebSocket switched through the harness: client and backend ends."""

    def __init__(self, h: Harness, first: bytes = b"") -> None:
        self.client = h.client()
        self.client.send(UPGRADE)
        self.backend = h.accept()
        self.backend.reply(SWITCH + first)

    @staticmethod
    def side(end: Client | Backend) -> Any:
        protocol = end.transport.protocol
        assert isinstance(protocol, Side)
        return protocol

    def client_sends(self, data: bytes) -> None:
        self.side(self.client).dataReceived(data)

    def backend_sends(self, data: bytes) -> None:
        self.side(self.backend).dataReceived(data)


class UpgradeRequestTests(SynchronousTestCase):
    def test_upgrade_headers_kept(self) -> None:
        """An upgrade request reaches the backend with Upgrade and
        Connection: upgrade; the other hop-by-hop tokens still go."""
        h = Harness()
        client = h.client()
        client.send(UPGRADE)
        lines = head_lines(h.accept().received())
        self.assertIn(b"Upgrade: websocket", lines)
        self.assertIn(b"Connection: upgrade", lines)
        # twisted.web spells names its own way (Sec-Websocket-Key): no matter.
        lower = [line.lower() for line in lines]
        self.assertIn(b"sec-websocket-key: dghlihnhbxbszsbub25jzq==", lower)
        self.assertIn(b"sec-websocket-version: 13", lower)
        self.assertNotIn(b"keep-alive", b"\n".join(lines).lower())

    def test_upgrade_needs_connection_token(self) -> None:
        """An Upgrade header not named in Connection is hop-by-hop noise and
        is dropped, as before."""
        h = Harness()
        client = h.client()
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
        sent = h.accept().received().lower()
        self.assertNotIn(b"upgrade", sent)

    def test_refused_upgrade_is_a_normal_answer(self) -> None:
        """A backend that answers the upgrade with a plain response is proxied
        as usual, and the connection goes back to the pool."""
        h = Harness(backends=1)
        client = h.client()
        client.send(UPGRADE)
        backend = h.accept()
        backend.reply(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 426 "))
        self.assertEqual(h.active(), [0])
        self.assertEqual(h.registry.backends[0].pool.idle, 1)

    def test_unasked_switch_is_502(self) -> None:
        """A backend that switches protocols for a request that did not ask
        is a bad gateway; its connection is dropped."""
        h = Harness()
        client = h.client()
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend = h.accept()
        backend.reply(SWITCH)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502 "))
        self.assertTrue(backend.transport.disconnected)
        self.assertEqual(h.active(), [0, 0])


class SwitchedTests(SynchronousTestCase):
    def test_101_reaches_client(self) -> None:
        """The client gets the backend's 101 with its Upgrade, Connection:
        Upgrade and Sec-WebSocket-Accept, without other hop-by-hop headers,
        and the new protocol's first bytes right after it."""
        h = Harness()
        t = Tunnel(h, first=b"\x81\x02hi")
        response = t.client.received()
        lines = head_lines(response)
        self.assertEqual(lines[0], b"HTTP/1.1 101 Switching Protocols")
        self.assertIn(b"Upgrade: websocket", lines)
        self.assertIn(b"Connection: Upgrade", lines)
        self.assertIn(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", lines)
        self.assertFalse([x for x in lines if x.lower().startswith(b"keep-alive")])
        self.assertFalse(
            [x for x in lines if x.lower().startswith(b"transfer-encoding")]
        )
        self.assertTrue(response.endswith(b"\r\n\r\n\x81\x02hi"))

    def test_switch_split_over_reads(self) -> None:
        """A 101 head that arrives in pieces, after a 100 Continue, is still
        recognised, and the bytes behind it are relayed."""
        h = Harness()
        client = h.client()
        client.send(UPGRADE)
        backend = h.accept()
        backend.reply(b"HTTP/1.1 100 Continue\r\n\r\n" + SWITCH[:40])
        self.assertEqual(client.received(), b"")
        backend.reply(SWITCH[40:] + b"xy")
        response = client.received()
        self.assertTrue(response.startswith(b"HTTP/1.1 101 "), response)
        self.assertTrue(response.endswith(b"\r\n\r\nxy"), response)

    def test_raw_bytes_both_ways(self) -> None:
        """After the switch bytes pass unparsed both ways, and each transport
        is the other's producer."""
        h = Harness()
        t = Tunnel(h)
        t.client.transport.clear()
        t.backend.transport.clear()
        t.client_sends(b"\x81\x85\x00\x00\x00\x00hello")
        t.backend_sends(b"GET / HTTP/1.1\r\n\r\n")  # not HTTP any more
        self.assertEqual(t.backend.received(), b"\x81\x85\x00\x00\x00\x00hello")
        self.assertEqual(t.client.received(), b"GET / HTTP/1.1\r\n\r\n")
        self.assertIs(t.client.transport.producer, t.backend.transport)
        self.assertIs(t.backend.transport.producer, t.client.transport)

    def test_counts_until_closed(self) -> None:
        """The tunnel holds its lease (an active connection) until either side
        closes; then it is released once, and the access log says 101."""
        h = Harness()
        t = Tunnel(h)
        self.assertEqual(h.active(), [1, 0])
        h.client().send(UPGRADE)
        self.assertEqual(h.pending_connects(), [("127.0.0.1", 9002)])
        self.assertEqual(h.active(), [1, 1])
        self.assertEqual(h.records, [])
        t.backend_sends(b"12345")
        t.client.transport.loseConnection()
        self.assertEqual(h.active(), [0, 1])
        self.assertFalse(t.backend.transport.connected)
        self.assertEqual(len(h.records), 1)
        record = h.records[0]
        self.assertEqual((record["status"], record["backend"]), (101, "b0"))
        self.assertEqual(record["bytes"], 5)
        self.assertEqual(h.registry.backends[0].failures, 0)

    def test_backend_closes(self) -> None:
        """A backend that closes the tunnel closes the client too."""
        h = Harness()
        t = Tunnel(h)
        t.backend.transport.loseConnection()
        self.assertFalse(t.client.transport.connected)
        self.assertEqual(h.active(), [0, 0])

    def test_backend_reset_is_a_failure(self) -> None:
        """A backend that resets the tunnel while the client is connected
        fails it (towards passive ejection); one that closes it does not."""
        h = Harness(backends=1)
        t = Tunnel(h)
        Tunnel.side(t.backend).connectionLost(Failure(ConnectionLost("reset")))
        if t.client.transport.connected:
            Tunnel.side(t.client).connectionLost(Failure(ConnectionDone()))
        self.assertEqual(h.active(), [0])
        backend = h.registry.backends[0]
        self.assertEqual((backend.failures, backend.consecutive_failures), (1, 1))
        t = Tunnel(h)
        t.backend.transport.loseConnection()
        self.assertEqual(backend.failures, 1)
        self.assertEqual(backend.consecutive_failures, 0)

    def test_no_backend_timeout_then_idle_timeout(self) -> None:
        """backend_timeout no longer applies after the switch; idle_timeout
        does, and frees the lease."""
        h = Harness(extra="idle_timeout = 60s")
        t = Tunnel(h)
        h.reactor.advance(50)
        t.client_sends(b"ping")
        h.reactor.advance(59)
        self.assertTrue(t.client.transport.connected)
        h.reactor.advance(1)
        self.assertFalse(t.client.transport.connected)
        self.assertFalse(t.backend.transport.connected)
        self.assertEqual(h.active(), [0, 0])
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_client_bytes_sent_early(self) -> None:
        """Bytes the client sent right behind its upgrade request (read by the
        HTTP channel before the switch) reach the backend after the switch."""
        h = Harness()
        client = h.client()
        client.send(UPGRADE + b"\x81\x80\x00\x00\x00\x00")
        backend = h.accept()
        backend.transport.clear()
        backend.reply(SWITCH)
        self.assertEqual(backend.received(), b"\x81\x80\x00\x00\x00\x00")

    def test_http10_not_upgraded(self) -> None:
        """HTTP/1.0 has no protocol switch: the headers are dropped."""
        h = Harness()
        client = h.client()
        client.send(UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        self.assertNotIn(b"upgrade", h.accept().received().lower())
