"""
Tests for the queue in L{txlb.httpproxy}: a request beyond every backend's
C{max_connections} waits in the registry's queue, then is proxied, or is
answered 503 when it times out or the queue is full.  (Kept apart from
C{tests/http/test_proxy.py} while the front end is rewritten.)
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Harness
from txlb.http.upload import HOLD

GET = b"GET /path HTTP/1.1\r\nHost: example.com\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def limited(queue_size: int = 1024, queue_timeout: float = 5.0) -> Harness:
    """One backend taking one request at once."""
    return Harness(
        backends=1,
        extra=f"queue_size = {queue_size}\nqueue_timeout = {queue_timeout}",
        backend_extra="max_connections = 1",
    )


class QueueTests(SynchronousTestCase):
    def test_waits_then_proxied(self) -> None:
        """
        A request beyond max_connections opens no connection and waits;
        when the first response ends it goes to the backend and is answered.
        """
        h = limited()
        first, second = h.client(), h.client()
        first.send(GET)
        backend = h.accept()
        second.send(GET)
        self.assertEqual(h.pending_connects(), [])
        self.assertEqual((h.active(), len(h.registry.queue)), ([1], 1))
        self.assertEqual(second.received(), b"")
        backend.transport.clear()
        backend.reply(OK)
        self.assertTrue(first.received().endswith(b"hello"))
        self.assertEqual((h.active(), len(h.registry.queue)), ([1], 0))
        # On a new connection (today the lease is released before the
        # connection goes back to the pool) or on the one just freed.
        if h.pending_connects():
            backend = h.accept()
        self.assertTrue(backend.received().startswith(b"GET /path HTTP/1.1\r\n"))
        backend.reply(OK)
        response = second.received()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"), response)
        self.assertEqual(h.active(), [0])
        self.assertEqual([r["status"] for r in h.records], [200, 200])

    def test_queue_timeout_503(self) -> None:
        """After queue_timeout the waiting request gets 503 with Retry-After."""
        h = limited(queue_timeout=2.0)
        first, second = h.client(), h.client()
        first.send(GET)
        h.accept()
        second.send(GET)
        h.reactor.advance(1.9)
        self.assertEqual(second.received(), b"")
        h.reactor.advance(0.1)
        response = second.received()
        self.assertTrue(response.startswith(b"HTTP/1.1 503 "), response)
        self.assertIn(b"Retry-After: ", response)
        self.assertTrue(response.endswith(b"queue timed out\n"), response)
        self.assertEqual((h.active(), len(h.registry.queue)), ([1], 0))
        self.assertEqual(h.registry.queue.timeouts, 1)
        self.assertEqual(h.pending_connects(), [])

    def test_queue_full_503(self) -> None:
        """With the queue full a request gets 503 at once."""
        h = limited(queue_size=1)
        first, second, third = h.client(), h.client(), h.client()
        first.send(GET)
        h.accept()
        second.send(GET)
        third.send(GET)
        response = third.received()
        self.assertTrue(response.startswith(b"HTTP/1.1 503 "), response)
        self.assertIn(b"Retry-After: ", response)
        self.assertTrue(response.endswith(b"queue full\n"), response)
        self.assertEqual(second.received(), b"")
        self.assertEqual(
            (len(h.registry.queue), h.registry.queue.full_rejections), (1, 1)
        )

    def test_client_with_a_body_leaves_while_waiting(self) -> None:
        """
        A queued request whose body is still coming keeps its client read
        (up to HOLD), so a disconnect is seen at once: it leaves the queue,
        and nothing of it reaches the backend.
        """
        h = limited()
        first, second = h.client(), h.client()
        first.send(GET)
        backend = h.accept()
        second.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nab")
        self.assertEqual(len(h.registry.queue), 1)
        self.assertEqual(second.transport.producerState, "producing")
        second.send(b"cd")
        second.transport.loseConnection()
        self.assertEqual(len(h.registry.queue), 0)
        backend.transport.clear()
        backend.reply(OK)
        self.assertEqual(h.pending_connects(), [])
        self.assertEqual(backend.received(), b"")
        self.assertEqual(h.active(), [0])
        self.assertEqual(sorted(r["status"] for r in h.records), [200, 499])

    def test_body_held_up_to_a_bound(self) -> None:
        """
        While a request waits, its body is read up to HOLD bytes, then its
        client is paused, and its body deadline with it (the client is not
        late while it is not read); all of the body reaches the backend.
        """
        h = limited(queue_timeout=600)
        first, second = h.client(), h.client()
        first.send(GET)
        backend = h.accept()
        size = HOLD + 10_000
        head = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
        second.send(head % size)
        piece = b"x" * 8192
        sent = 0
        while second.transport.producerState == "producing":
            second.send(piece)
            sent += len(piece)
        self.assertEqual(sent, HOLD)
        # Past body_timeout and body_min_rate's allowance (60 + 64 s), paused.
        h.reactor.advance(300)
        self.assertEqual(second.received(), b"")
        backend.transport.clear()
        backend.reply(OK)
        if h.pending_connects():
            backend = h.accept()
        self.assertEqual(second.transport.producerState, "producing")
        second.send(b"y" * (size - sent))
        body = backend.received().split(b"\r\n\r\n", 1)[1]
        self.assertEqual(body, b"x" * sent + b"y" * (size - sent))

    def test_client_leaves_while_waiting(self) -> None:
        """
        A waiting client that disconnects leaves the queue; the freed slot
        opens no connection for it and no lease leaks.
        """
        h = limited()
        first, second = h.client(), h.client()
        first.send(GET)
        backend = h.accept()
        second.send(GET)
        second.transport.loseConnection()
        self.assertEqual(len(h.registry.queue), 0)
        backend.transport.clear()
        backend.reply(OK)
        self.assertEqual(h.pending_connects(), [])
        self.assertEqual(backend.received(), b"")
        self.assertEqual(h.active(), [0])
        self.assertEqual(sorted(r["status"] for r in h.records), [200, 499])
