"""
Tests for L{txlb.httpproxy}: a real ProxySite/HTTPChannel on a memory
reactor, with string transports on both sides.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Harness
from txlb.http.upload import HOLD

GET = b"GET /path?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: backend/1\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\nhello"
)
CLOSING = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def header_lines(response: bytes) -> list[bytes]:
    return response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


class ProxyTests(SynchronousTestCase):
    def test_get_relayed(self) -> None:
        """A GET goes to a backend with forwarding headers; the answer comes back."""
        h = Harness()
        client = h.client()
        client.send(GET)
        self.assertEqual(h.pending_connects(), [("127.0.0.1", 9001)])
        backend = h.accept()
        sent = backend.received()
        self.assertTrue(sent.startswith(b"GET /path?x=1 HTTP/1.1\r\n"), sent)
        self.assertIn(b"Host: example.com\r\n", sent)
        self.assertIn(b"X-Forwarded-For: 192.0.2.7\r\n", sent)
        self.assertIn(b"X-Forwarded-Proto: http\r\n", sent)
        self.assertEqual(h.active(), [1, 0])
        backend.reply(OK)
        response = client.received()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"), response)
        self.assertTrue(response.endswith(b"\r\n\r\nhello"))
        self.assertEqual(h.active(), [0, 0])
        self.assertEqual(h.records[0]["status"], 200)
        self.assertEqual(h.records[0]["backend"], "b0")

    def test_server_and_date_not_duplicated(self) -> None:
        """The backend's Server and Date pass through once each."""
        h = Harness()
        client = h.client()
        client.send(GET)
        h.accept().reply(OK)
        lines = header_lines(client.received())
        self.assertEqual(
            [x for x in lines if x.lower().startswith(b"server:")],
            [b"Server: backend/1"],
        )
        self.assertEqual(len([x for x in lines if x.lower().startswith(b"date:")]), 1)
        self.assertIn(b"Date: Mon, 01 Jan 2024 00:00:00 GMT", lines)

    def test_keep_alive_reuse(self) -> None:
        """A finished exchange returns its connection; the next request reuses it."""
        h = Harness(backends=1)
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(OK)
        backend.transport.clear()
        client.send(GET)
        self.assertEqual(h.pending_connects(), [])
        self.assertTrue(backend.received().startswith(b"GET /path"))
        backend.reply(OK)
        self.assertEqual(client.received().count(b"hello"), 2)

    def test_sequential_requests_spread(self) -> None:
        """Sequential requests on an idle balancer visit both backends."""
        h = Harness()
        client = h.client()
        client.send(GET)
        h.accept().reply(OK)
        client.send(GET)
        self.assertEqual(h.pending_connects(), [("127.0.0.1", 9002)])

    def test_response_hop_by_hop_and_rechunking(self) -> None:
        """Hop-by-hop response headers go; a chunked body is re-chunked intact."""
        h = Harness()
        client = h.client()
        client.send(GET)
        h.accept().reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Drop\r\n"
            b"X-Drop: 1\r\nKeep-Alive: timeout=3\r\nX-Keep: 2\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        response = client.received()
        lines = header_lines(response)
        self.assertIn(b"X-Keep: 2", lines)
        for gone in (b"x-drop", b"keep-alive", b"connection"):
            self.assertFalse([x for x in lines if x.lower().startswith(gone)], lines)
        self.assertIn(b"Transfer-Encoding: chunked", lines)
        body = response.split(b"\r\n\r\n", 1)[1]
        self.assertEqual(body, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        self.assertEqual(h.active(), [0, 0])

    def test_head(self) -> None:
        """HEAD gets the head with its Content-Length and no body; the
        connection stays usable."""
        h = Harness(backends=1)
        client = h.client()
        client.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend = h.accept()
        backend.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        response = client.received()
        self.assertIn(b"Content-Length: 1000", header_lines(response))
        self.assertTrue(response.endswith(b"\r\n\r\n"))
        self.assertEqual(h.active(), [0])
        client.transport.clear()
        backend.transport.clear()
        client.send(GET)
        self.assertEqual(h.pending_connects(), [])
        backend.reply(OK)
        self.assertTrue(client.received().endswith(b"hello"))

    def test_http10_client(self) -> None:
        """An HTTP/1.0 client without Host is answered and disconnected."""
        h = Harness(backends=1)
        client = h.client()
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        backend = h.accept()
        self.assertIn(b"Host: 127.0.0.1\r\n", backend.received())
        backend.reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        )
        response = client.received()
        # RFC 9110 2.5: a server answers with the highest version it
        # conforms to within the client's major version (as nginx does).
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response)
        self.assertTrue(response.endswith(b"\r\n\r\nhi"), response)
        self.assertFalse(client.transport.connected)

    def test_informational_skipped(self) -> None:
        """A backend's 100 Continue is not forwarded; the final answer is."""
        h = Harness(backends=1)
        client = h.client()
        client.send(GET)
        h.accept().reply(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        response = client.received()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response)
        self.assertNotIn(b"100 Continue", response)

    def test_close_delimited_body(self) -> None:
        """A body ended by the backend closing is complete, not an error."""
        h = Harness(backends=1)
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(b"HTTP/1.0 200 OK\r\n\r\nall of it")
        backend.close()
        response = client.received()
        self.assertTrue(response.endswith(b"9\r\nall of it\r\n0\r\n\r\n"), response)
        self.assertEqual(h.registry.backends[0].failures, 0)
        self.assertTrue(client.transport.connected)


class FailureTests(SynchronousTestCase):
    def test_connect_failure_tries_next_backend(self) -> None:
        """A refused connection is retried on another backend."""
        h = Harness()
        client = h.client()
        client.send(GET)
        h.refuse()
        self.assertEqual(h.pending_connects(), [("127.0.0.1", 9002)])
        h.accept().reply(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))
        self.assertEqual(h.active(), [0, 0])
        self.assertEqual([b.failures for b in h.registry.backends], [1, 0])
        # Counted, for /metrics, on the backend the request left.
        self.assertEqual([b.retries for b in h.registry.backends], [1, 0])

    def test_all_unreachable_502(self) -> None:
        """When every backend refuses, the client gets 502."""
        h = Harness()
        client = h.client()
        client.send(GET)
        h.refuse()
        h.refuse()
        self.assertTrue(
            client.received().startswith(b"HTTP/1.1 502 "), client.received()
        )
        self.assertEqual(h.active(), [0, 0])

    def test_retries_limit(self) -> None:
        """retries bounds how many other backends are tried."""
        h = Harness(backends=3, extra="retries = 1")
        client = h.client()
        client.send(GET)
        h.refuse()
        h.refuse()
        self.assertEqual(h.pending_connects(), [])
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502 "))
        # One retry was made (away from the first); the second gave up.
        self.assertEqual([b.retries for b in h.registry.backends], [1, 0, 0])

    def test_no_backend_503(self) -> None:
        """With no healthy backend the answer is 503 with Retry-After, at once."""
        h = Harness()
        for b in h.registry.backends:
            h.registry.set_healthy(b, False, "test")
        client = h.client()
        client.send(GET)
        response = client.received()
        self.assertTrue(response.startswith(b"HTTP/1.1 503 "), response)
        self.assertIn(b"Retry-After: 2", header_lines(response))
        self.assertEqual(h.pending_connects(), [])

    def test_timeout_504(self) -> None:
        """No answer within backend_timeout gives 504; the connection is dropped."""
        h = Harness()
        client = h.client()
        client.send(GET)
        backend = h.accept()
        h.reactor.advance(9.9)
        self.assertEqual(client.received(), b"")
        h.reactor.advance(0.2)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 504 "))
        self.assertTrue(backend.transport.disconnected)
        self.assertEqual(h.active(), [0, 0])

    def test_reset_before_answer_retried_elsewhere(self) -> None:
        """A GET whose backend closes before answering is replayed on another
        backend; the first one is charged a failure."""
        h = Harness()
        client = h.client()
        client.send(GET)
        h.accept().close()
        self.assertEqual(h.pending_connects(), [("127.0.0.1", 9002)])
        h.accept().reply(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200 "))
        self.assertEqual(h.active(), [0, 0])
        self.assertEqual([b.failures for b in h.registry.backends], [1, 0])
        self.assertEqual([b.retries for b in h.registry.backends], [1, 0])

    def test_reset_with_body_not_replayed(self) -> None:
        """A POST whose body was sent is never replayed: 502."""
        h = Harness()
        client = h.client()
        client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n")
        backend = h.accept()
        client.send(b"ab")
        backend.close()
        self.assertEqual(h.pending_connects(), [])
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502 "))
        self.assertEqual(h.active(), [0, 0])
        self.assertEqual([b.retries for b in h.registry.backends], [0, 0])

    def test_retry_budget(self) -> None:
        """Replays of requests that reached a backend stay within the budget:
        with a 20% budget and no floor, 2 of 10 requests reset before
        answering are replayed (a fifth of the 10 requests seen); the rest
        get 502."""
        h = Harness(backends=2, extra="retry_budget = 20\nmin_retries_per_second = 0")
        clients = [h.client() for _ in range(10)]
        for client in clients:
            client.send(GET)
        backends = [h.accept() for _ in range(10)]
        for backend in backends:
            backend.close()
        answered = [c.received()[:12] for c in clients]
        self.assertEqual(answered.count(b"HTTP/1.1 502"), 8)
        self.assertEqual(len(h.pending_connects()), 2)
        for _ in range(2):
            h.accept().reply(OK)
        answered = [c.received()[:15] for c in clients]
        self.assertEqual(answered.count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(h.active(), [0, 0])

    def test_a_dying_backend_costs_no_request(self) -> None:
        """After steady traffic, a backend that resets all its requests in
        flight at once (it died) has every one replayed: the budget counts
        the last 10 seconds' requests, not those in flight.  A 20% budget
        of the 10 in flight would replay 2."""
        h = Harness(
            backends=2,
            extra="retry_budget = 20\nmin_retries_per_second = 0\n"
            "[outlier]\nconsecutive_failures = 0",
        )
        steady = h.client()
        for _ in range(50):
            h.reactor.advance(0.1)
            steady.send(GET)
            h.accept().reply(CLOSING)  # none pooled: the 10 below are fresh
        self.assertEqual(steady.received().count(b"HTTP/1.1 200 OK"), 50)
        clients = [h.client() for _ in range(10)]
        for client in clients:
            client.send(GET)
        dying = [h.accept() for _ in range(10)]
        for backend in dying:
            backend.close()
        self.assertEqual([c.received() for c in clients], [b""] * 10)
        for _ in range(10):
            h.accept().reply(OK)
        self.assertEqual(
            [c.received()[:15] for c in clients], [b"HTTP/1.1 200 OK"] * 10
        )
        self.assertEqual(h.active(), [0, 0])

    def test_refused_connections_outside_the_budget(self) -> None:
        """A refused connection did no work anywhere: its retry is bounded by
        retries only, so a backend dying under load costs no request."""
        h = Harness(
            backends=2,
            extra="retry_budget = 0\n[outlier]\nconsecutive_failures = 0",
        )
        clients = [h.client() for _ in range(10)]
        for client in clients:
            client.send(GET)
        for _ in range(10):
            h.refuse()
        self.assertEqual([c.received() for c in clients], [b""] * 10)
        for _ in range(10):
            h.accept().reply(OK)
        self.assertEqual(
            [c.received()[:15] for c in clients], [b"HTTP/1.1 200 OK"] * 10
        )
        self.assertEqual(h.active(), [0, 0])

    def test_passive_ejection_from_5xx(self) -> None:
        """Consecutive 5xx answers eject a backend; requests then go elsewhere."""
        h = Harness(extra="[outlier]\nconsecutive_failures = 2")
        error = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
        client = h.client()
        client.send(GET)
        b0 = h.accept()
        b0.reply(error)
        client.send(GET)
        b1 = h.accept()
        b1.reply(OK)
        client.send(GET)  # b0 again, on its pooled connection
        b0.reply(error)
        self.assertEqual(h.registry.backends[0].state, "ejected")
        self.assertIn(
            "2 consecutive failures (last: answered 500)",
            h.registry.backends[0].history[-1].reason,
        )
        b1.transport.clear()
        for _ in range(3):
            client.send(GET)
            b1.reply(OK)
        self.assertEqual(b1.received().count(b"GET /path"), 3)
        self.assertEqual(h.pending_connects(), [])

    def test_invalid_response_502(self) -> None:
        """Garbage from a backend gives 502."""
        h = Harness()
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(b"NOT HTTP AT ALL\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502 "))
        self.assertTrue(backend.transport.disconnected)
        self.assertEqual(h.active(), [0, 0])

    def test_ambiguous_or_malformed_responses_502(self) -> None:
        """
        A backend's response that a second parser could read otherwise is
        never passed on: 502, the backend connection dropped, the lease back.
        """
        bad = {
            "status line": b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok",
            "space before colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
            "bare LF": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
            "obs-fold": b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
            "CL and TE": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
            b"Content-Length: 3\r\n\r\nok!",
            "bad length": b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
            "NUL in a value": b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n"
            b"Content-Length: 2\r\n\r\nok",
        }
        for name, response in bad.items():
            h = Harness(backends=1)
            client = h.client()
            client.send(GET)
            backend = h.accept()
            backend.reply(response)
            self.assertTrue(client.received().startswith(b"HTTP/1.1 502 "), name)
            self.assertNotIn(b"ok", client.received(), name)
            self.assertTrue(backend.transport.disconnected, name)
            self.assertEqual(h.active(), [0], name)

    def test_bad_chunk_mid_body_aborts_client(self) -> None:
        """A chunked body that turns invalid after the head was sent: abort."""
        h = Harness(backends=1)
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"
        )
        backend.reply(b"zz\r\n")
        self.assertTrue(client.transport.disconnected)
        self.assertNotIn(b"0\r\n\r\n", client.received())
        self.assertEqual(h.active(), [0])

    def test_backend_closes_mid_body_aborts_client(self) -> None:
        """A truncated body never looks complete: the client connection is aborted."""
        h = Harness()
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        backend.close()
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(h.active(), [0, 0])

    def test_stale_keepalive_replayed(self) -> None:
        """An idempotent request on a pooled connection the backend just
        closed is replayed on a fresh connection."""
        h = Harness(backends=1)
        client = h.client()
        client.send(GET)
        first = h.accept()
        first.reply(OK)
        client.transport.clear()
        client.send(GET)
        first.close()
        self.assertEqual(h.pending_connects(), [("127.0.0.1", 9001)])
        h.accept().reply(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200"))
        self.assertEqual(h.registry.backends[0].failures, 0)


class ClientGoneTests(SynchronousTestCase):
    def test_client_leaves_mid_response(self) -> None:
        """The client leaving mid-response aborts the backend and frees the lease."""
        h = Harness()
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        client.proto.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(backend.transport.disconnected)
        self.assertEqual(h.active(), [0, 0])
        self.assertEqual(h.records[-1]["status"], 499)

    def test_client_leaves_while_connecting(self) -> None:
        """A client leaving before the backend connects frees the lease; the
        connection that arrives later is pooled, not leaked."""
        h = Harness(backends=1)
        client = h.client()
        client.send(GET)
        client.proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(h.active(), [0])
        backend = h.accept()
        self.assertEqual(backend.received(), b"")
        self.assertEqual(h.registry.backends[0].pool.idle, 1)

    def test_reserved_paths_not_proxied(self) -> None:
        """/api/ belongs to the stats app, not to a backend."""
        h = Harness()
        client = h.client()
        client.send(b"GET /api/nothing HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(h.pending_connects(), [])
        self.assertTrue(client.received().startswith(b"HTTP/1.1 404"))

    def test_healthz_answered_here_exactly(self) -> None:
        """
        /healthz (with or without a query) is the stats app's on a shared
        port; a longer path that starts the same goes to a backend.
        """
        for path, mine in (
            (b"/healthz", True),
            (b"/healthz?probe=nlb", True),
            (b"/healthzone", False),
            (b"/healthz/x", False),
        ):
            with self.subTest(path=path):
                h = Harness()
                self.assertEqual(h.factory.handle.reserved(path), mine)
                client = h.client()
                client.send(b"GET " + path + b" HTTP/1.1\r\nHost: h\r\n\r\n")
                self.assertEqual(h.pending_connects() == [], mine)


class StreamingTests(SynchronousTestCase):
    def test_upload_streams(self) -> None:
        """A body read while the backend connects is kept, sent once it is
        up, then streamed as it arrives, before the request is complete."""
        h = Harness(backends=1)
        client = h.client()
        client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 15\r\n\r\n")
        self.assertEqual(client.transport.producerState, "producing")
        client.send(b"early")
        backend = h.accept()
        self.assertEqual(client.transport.producerState, "producing")
        self.assertTrue(backend.received().endswith(b"\r\n\r\nearly"))
        client.send(b"01234")
        self.assertTrue(backend.received().endswith(b"\r\n\r\nearly01234"))
        self.assertIn(b"Content-Length: 15\r\n", backend.received())
        client.send(b"56789")
        self.assertTrue(backend.received().endswith(b"early0123456789"))
        backend.reply(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 201 "))
        self.assertEqual(h.active(), [0])

    def test_body_deadline_runs_while_read(self) -> None:
        """The body deadline still runs while the body is read: a client that
        stops sending gets 408."""
        h = Harness(backends=1)
        client = h.client()
        client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01")
        h.reactor.advance(61)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 408 "))

    def test_body_in_the_head_packet(self) -> None:
        """Body bytes that arrive with the head, before any backend connection
        exists, are kept and sent once it is up (then the request is whole)."""
        h = Harness(backends=1)
        client = h.client()
        client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
        backend = h.accept()
        self.assertTrue(backend.received().endswith(b"\r\n\r\nhello"))
        backend.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(client.received().endswith(b"\r\n\r\nok"))
        self.assertEqual(h.active(), [0])

    def test_early_body_survives_a_refused_connection(self) -> None:
        """A body not yet sent goes whole to the backend tried next."""
        h = Harness(backends=2)
        client = h.client()
        client.send(
            b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n"
        )
        h.refuse()
        client.send(b"0\r\n\r\n")
        backend = h.accept()
        self.assertTrue(
            backend.received().endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            backend.received(),
        )

    def test_slow_upload_is_not_a_backend_timeout(self) -> None:
        """backend_timeout counts from the end of the upload, not its start."""
        h = Harness(backends=1)
        client = h.client()
        client.send(b"PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n")
        backend = h.accept()
        for piece in (b"a", b"b", b"c"):
            h.reactor.advance(6)
            client.send(piece)
        self.assertEqual(client.received(), b"")
        client.send(b"d")
        h.reactor.advance(9.9)
        self.assertEqual(client.received(), b"")
        h.reactor.advance(0.2)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 504 "))
        self.assertTrue(backend.received().endswith(b"abcd"))

    def test_backend_lost_mid_upload_gets_502(self) -> None:
        """
        A backend that breaks while a large body streams to it: the rest of
        the body is read and dropped (never held, so the client is never
        paused for it) and the client gets 502 once it has sent it all.
        """
        h = Harness(backends=1)
        client = h.client()
        size = 3 * HOLD
        head = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
        client.send(head % size)
        backend = h.accept()
        client.send(b"x" * HOLD)
        backend.close()
        client.send(b"y" * HOLD)
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(client.received(), b"")
        client.send(b"z" * HOLD)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502 "))
        self.assertEqual(h.active(), [0])

    def test_chunked_upload(self) -> None:
        """A chunked upload is re-chunked to the backend."""
        h = Harness(backends=1)
        client = h.client()
        client.send(
            b"PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        backend = h.accept()
        client.send(b"3\r\nabc\r\n0\r\n\r\n")
        sent = backend.received()
        self.assertIn(b"Transfer-Encoding: chunked\r\n", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), sent)
        backend.reply(OK)
        self.assertTrue(client.received().endswith(b"hello"))

    def test_early_response_waits_for_request(self) -> None:
        """A backend answering before the upload ends is relayed once the
        request is complete."""
        h = Harness(backends=1)
        client = h.client()
        client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab")
        backend = h.accept()
        backend.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(client.received(), b"")
        client.send(b"cd")
        self.assertTrue(client.received().endswith(b"\r\n\r\nok"))
        self.assertEqual(h.active(), [0])

    def test_download_backpressure(self) -> None:
        """A client that cannot keep up pauses the backend read."""
        h = Harness(backends=1)
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nxx")
        # What the client's transport does when its send buffer fills up.
        flow = client.transport.producer
        flow.pauseProducing()
        self.assertEqual(backend.transport.producerState, "paused")
        flow.resumeProducing()
        self.assertEqual(backend.transport.producerState, "producing")

    def test_paused_client_is_not_a_backend_timeout(self) -> None:
        """
        While the client reads nothing, backend_timeout does not run (the
        backend is paused, not slow); client_timeout ends the connection
        and the backend is not blamed.
        """
        h = Harness(backends=1, extra="client_timeout = 60s\n")
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nxx")
        client.transport.producer.pauseProducing()
        h.reactor.advance(59)  # well past backend_timeout (10s)
        self.assertTrue(client.transport.connected)
        self.assertEqual(h.active(), [1])
        h.reactor.advance(2)
        self.assertFalse(client.transport.connected)
        self.assertEqual(h.active(), [0])
        self.assertEqual(h.registry.backends[0].failures, 0)
