"""
The HTTP front end on a memory reactor: deadlines, pipelining, limits,
request-target forms and the shared stats port.  (Hostile bytes against a
real txlb: tests/integration/test_hostile.py.)
"""

from __future__ import annotations

import gc

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Backend, Harness
from txlb.http.frontend import HTTPFrontend

GET = b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


class DeadlineTests(SynchronousTestCase):
    def test_slow_head_has_a_total_deadline(self) -> None:
        """
        A head sent a byte at a time is cut off header_timeout after it
        began, however steadily the bytes come (Twisted's own idle timer
        would be reset by each): 408, closed, no backend contacted.
        """
        h = Harness(backends=1, extra="header_timeout = 10s\n")
        client = h.client()
        h.reactor.advance(5)  # an idle start counts too (from the accept)
        for byte in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"x" * 100:
            client.send(bytes([byte]))
            h.reactor.advance(0.2)
            if not client.transport.connected:
                break
        self.assertFalse(client.transport.connected)
        self.assertEqual(status(client.received()), 408)
        self.assertEqual(h.pending_connects(), [])
        # Cut off at the first step that reaches 10s (steps of 0.2s).
        self.assertTrue(9.9 < h.reactor.seconds() < 10.3, h.reactor.seconds())

    def test_keepalive_idle_closed(self) -> None:
        """An idle connection between requests closes after keepalive_timeout."""
        h = Harness(backends=1, extra="keepalive_timeout = 30s\n")
        client = h.client()
        client.send(GET)
        h.accept().reply(OK)
        h.reactor.advance(29.9)
        self.assertTrue(client.transport.connected)
        h.reactor.advance(0.2)
        self.assertFalse(client.transport.connected)

    def test_next_request_head_deadline_starts_at_its_first_byte(self) -> None:
        """After the idle wait, header_timeout counts from the next first byte."""
        h = Harness(backends=1, extra="keepalive_timeout = 30s\nheader_timeout = 5s\n")
        client = h.client()
        client.send(GET)
        h.accept().reply(OK)
        h.reactor.advance(20)
        client.send(b"GET /b HTTP/1.1\r\n")
        h.reactor.advance(4.9)
        self.assertTrue(client.transport.connected)
        h.reactor.advance(0.2)
        self.assertFalse(client.transport.connected)
        self.assertTrue(
            client.received().endswith(b"request head not received in time\n")
        )

    def test_slow_body_deadline_grows_with_min_rate(self) -> None:
        """
        A body must come within body_timeout plus a second per
        body_min_rate bytes; a stalled upload gets 408, its backend
        connection is dropped (the backend never sees it complete) and the
        lease is returned.
        """
        h = Harness(backends=1, extra="body_timeout = 10s\nbody_min_rate = 100\n")
        client = h.client()
        client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        backend = h.accept()
        client.send(b"x" * 500)  # 5 more seconds
        self.assertEqual(h.active(), [1])
        h.reactor.advance(14.9)
        self.assertTrue(client.transport.connected)
        h.reactor.advance(0.2)
        self.assertFalse(client.transport.connected)
        self.assertEqual(status(client.received()), 408)
        self.assertFalse(backend.transport.connected)
        self.assertEqual(h.active(), [0])


class IdleTellsTests(SynchronousTestCase):
    def test_resting_and_working_told(self) -> None:
        """
        The factory's idle listener (a worker's connection count) hears a
        keep-alive connection rest once its response is written and work
        again at the first byte of its next request; a connection whose
        answer closes it never rests.
        """
        heard: list[tuple[str, object]] = []

        class Listener:
            def resting(self, connection: object) -> None:
                heard.append(("resting", connection))

            def working(self, connection: object) -> None:
                heard.append(("working", connection))

        h = Harness(backends=1)
        h.factory.idle = Listener()  # type: ignore[attr-defined]
        client = h.client()
        client.send(GET)
        backend = h.accept()
        self.assertEqual(heard, [])
        backend.reply(OK)
        self.assertEqual(heard, [("resting", client.proto)])
        client.send(b"GET /b HTTP/1.1\r\n")
        self.assertEqual(heard[1:], [("working", client.proto)])
        client.send(b"Host: a\r\nConnection: close\r\n\r\n")
        backend.transport.clear()
        backend.reply(OK)
        self.assertTrue(client.received().endswith(b"ok"))
        self.assertFalse(client.transport.connected)
        self.assertEqual(len(heard), 2)


class PipelineTests(SynchronousTestCase):
    def test_pipelined_requests_answered_in_order(self) -> None:
        """
        Requests sent together are proxied one at a time, in order; the
        client is not read while one waits.
        """
        h = Harness(backends=1)
        client = h.client()
        client.send(GET + GET.replace(b"/a", b"/b") + GET.replace(b"/a", b"/c"))
        self.assertEqual(client.transport.producerState, "paused")
        first = h.accept()
        self.assertIn(b"GET /a ", first.received())
        self.assertNotIn(b"GET /b ", first.received())
        first.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        h.reactor.advance(0)
        self.assertIn(b"GET /b ", first.received())  # the same pooled connection
        first.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
        h.reactor.advance(0)
        self.assertIn(b"GET /c ", first.received())
        self.assertEqual(client.transport.producerState, "producing")
        first.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3")
        bodies = [
            r.rsplit(b"\r\n", 1)[-1] for r in client.received().split(b"HTTP/1.1 ")[1:]
        ]
        self.assertEqual(bodies, [b"1", b"2", b"3"])
        self.assertEqual(h.active(), [0])

    def test_invalid_request_after_a_valid_one(self) -> None:
        """
        A valid request then garbage: the first is answered, then 400 and
        close; the garbage never reaches a backend.
        """
        h = Harness(backends=1)
        client = h.client()
        client.send(GET + b"GET /x HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n")
        backend = h.accept()
        self.assertTrue(client.transport.connected)
        backend.reply(OK)
        response = client.received()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"))
        self.assertIn(b"\r\n\r\nokHTTP/1.1 400 Bad Request\r\n", response)
        self.assertFalse(client.transport.connected)
        self.assertNotIn(b"/x", backend.received())


class LimitTests(SynchronousTestCase):
    def test_max_clients_refused_with_503(self) -> None:
        """Connections over max_clients get a 503 and are closed."""
        h = Harness(backends=1, extra="max_clients = 2\n")
        first, second = h.client(), h.client()
        third = h.client()
        self.assertEqual(status(third.received()), 503)
        self.assertFalse(third.transport.connected)
        self.assertTrue(first.transport.connected and second.transport.connected)
        self.assertEqual(h.factory.limit.refused, 1)
        first.transport.loseConnection()
        fourth = h.client()
        self.assertEqual(fourth.received(), b"")
        self.assertTrue(fourth.transport.connected)

    def test_body_over_max_body_size(self) -> None:
        """A declared body over the limit: 413 before a backend is contacted."""
        h = Harness(backends=1, extra="max_body_size = 1k\n")
        client = h.client()
        client.send(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n")
        self.assertEqual(status(client.received()), 413)
        self.assertFalse(client.transport.connected)
        self.assertEqual(h.pending_connects(), [])

    def test_long_uri_and_large_head(self) -> None:
        """414 for a long request target, 431 for a large head."""
        h = Harness(backends=1, extra="max_uri_length = 100\nmax_header_size = 200\n")
        client = h.client()
        client.send(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(status(client.received()), 414)
        client = h.client()
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 200 + b"\r\n\r\n")
        self.assertEqual(status(client.received()), 431)
        self.assertEqual(h.pending_connects(), [])


class TargetTests(SynchronousTestCase):
    def test_absolute_form_stays_with_our_backends(self) -> None:
        """
        An absolute-form target is answered by our backend, in origin-form,
        with the target's authority as its Host (RFC 9112 3.2.2); txlb
        never connects to the host it names.
        """
        h = Harness(backends=1)
        client = h.client()
        client.send(b"GET http://evil.example/x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(h.pending_connects(), [("127.0.0.1", 9001)])
        sent = h.accept().received()
        self.assertTrue(sent.startswith(b"GET /x?y=1 HTTP/1.1\r\n"), sent)
        self.assertIn(b"\r\nHost: evil.example\r\n", sent)
        self.assertNotIn(b"Host: a\r\n", sent)

    def test_fragment_in_the_target_is_400(self) -> None:
        """A fragment is in no request-target form (RFC 9112 3.2): 400, and
        the backend gets nothing (a path rule and a backend could read the
        path differently)."""
        for target in (b"/admin#/public", b"http://a/x#y", b"/x?q=1#"):
            h = Harness(backends=1)
            client = h.client()
            client.send(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(status(client.received()), 400, target)
            self.assertFalse(client.transport.connected)
            self.assertEqual(h.pending_connects(), [])

    def test_connect_refused(self) -> None:
        h = Harness(backends=1)
        client = h.client()
        client.send(
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"
        )
        self.assertEqual(status(client.received()), 405)
        self.assertFalse(client.transport.connected)
        self.assertEqual(h.pending_connects(), [])

    def test_stats_path_then_proxied_on_one_connection(self) -> None:
        """
        On a shared port a reserved path goes to the stats app, and the
        same keep-alive connection then goes on to a backend.
        """
        h = Harness(backends=1)
        client = h.client()
        client.send(b"GET /api/nothing HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(status(client.received()), 404)  # the harness's stats app
        self.assertTrue(client.transport.connected)
        client.transport.clear()
        client.send(GET)
        h.accept().reply(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200 OK"))


class ContinueTests(SynchronousTestCase):
    def test_expect_100_continue_answered_by_txlb(self) -> None:
        """
        A client that sends Expect: 100-continue (curl does, for uploads
        over 1 KiB) gets 100 Continue at once; the backend gets the body
        without the Expect header.
        """
        h = Harness(backends=1)
        client = h.client()
        client.send(
            b"PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5\r\n\r\n"
        )
        self.assertEqual(client.received(), b"HTTP/1.1 100 Continue\r\n\r\n")
        backend = h.accept()
        client.send(b"hello")
        sent = backend.received()
        self.assertNotIn(b"Expect", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\nhello"), sent)
        backend.reply(OK)
        self.assertTrue(client.received().endswith(b"\r\n\r\nok"))

    def test_no_100_continue_when_refused(self) -> None:
        """A body over the limit is refused at once: 413, no 100 Continue."""
        h = Harness(backends=1, extra="max_body_size = 4\n")
        client = h.client()
        client.send(
            b"PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5\r\n\r\n"
        )
        self.assertTrue(client.received().startswith(b"HTTP/1.1 413 "))


class GarbageTests(SynchronousTestCase):
    def test_requests_leave_no_cycles(self) -> None:
        """
        A proxied request leaves no reference cycle behind: everything it
        made is freed by reference counting, so the cycle collector never
        has a backlog of requests to sweep (a pause of milliseconds under
        load, with the thresholds txlb sets; see txlb.tap.tune_gc).
        """
        h = Harness(backends=1)
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(OK)
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        for _ in range(50):
            client.send(GET)
            backend.reply(OK)
            client.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
            backend.reply(OK)
        self.assertEqual(gc.collect(), 0)

    def test_closed_connections_leave_no_cycles(self) -> None:
        """
        A closed client connection, idle, after a request, refused or timed
        out, leaves no reference cycle: its llhttp parser, which holds the
        protocol's bound methods, is let go when the connection closes
        (issue 16's soak: the cycles piled up between the cycle
        collector's rare full passes, a few MiB in minutes).
        """
        # The refusals are logged: to a logger of their own, since events
        # the global log buffer lets go (older tests') free their garbage.
        self.patch(HTTPFrontend, "log", Logger(observer=lambda event: None))
        h = Harness(backends=1, extra="header_timeout = 5s\n")
        warm = h.client()
        warm.send(GET)
        backend = h.accept()
        backend.reply(OK)
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        for _ in range(20):
            for send in (b"", GET, b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\n"):
                client = h.client()
                if send:
                    client.send(send)
                if send == GET:
                    backend.reply(OK)
                h.reactor.advance(6)  # past header_timeout
                client.transport.loseConnection()
                # As Twisted's TCP transport does once the connection is lost.
                client.transport.protocol = None
        del client
        self.assertEqual(gc.collect(), 0)


class ShutdownTests(SynchronousTestCase):
    def test_settle_closes_after_the_response(self) -> None:
        """
        A connection busy with a request at shutdown answers it with
        Connection: close, then closes; an idle one may close at once.
        """
        h = Harness(backends=1)
        idle, busy = h.client(), h.client()
        busy.send(GET)
        backend = h.accept()
        protocols = {c.proto: c for c in (idle, busy)}
        settled = {protocols[p]: p.settle() for p in list(h.factory.connections)}
        self.assertEqual(settled, {idle: True, busy: False})
        backend.reply(OK)
        self.assertIn(b"\r\nConnection: close\r\n", busy.received())
        self.assertFalse(busy.transport.connected)


class HeldHeadTests(SynchronousTestCase):
    """
    A request is started (handed to a backend) only once llhttp has gone
    past its whole head without error: llhttp judges some heads only after
    on_headers_complete has returned (issue 16).
    """

    def warm(self, h: Harness) -> tuple[Backend, bytes]:
        """A pooled, idle backend connection, and what it has received."""
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200 OK"))
        return backend, backend.received()

    def assert_nothing_sent(self, h: Harness, backend: Backend, before: bytes) -> None:
        self.assertEqual(backend.received(), before)
        self.assertTrue(backend.transport.connected)  # still pooled, not aborted
        self.assertEqual(h.pending_connects(), [])
        self.assertEqual(h.active(), [0])

    def test_unknown_final_coding_sends_nothing(self) -> None:
        """
        A head whose Transfer-Encoding ends in a coding other than chunked,
        alone in its read or with a body, gets 400 and not a byte reaches
        the idle pooled connection (it was sent, rewritten as chunked, and
        aborted before).
        """
        h = Harness(backends=1)
        backend, before = self.warm(h)
        for coding in (b"gzip", b"blegh", b"xchunked", b"\xffchunked", b"chunked\xff"):
            for body in (b"", b"5\r\nhello\r\n0\r\n\r\n"):
                client = h.client()
                client.send(
                    b"POST /refused HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
                    + coding
                    + b"\r\n\r\n"
                    + body
                )
                self.assertEqual(status(client.received()), 400, coding)
                self.assertFalse(client.transport.connected)
                self.assert_nothing_sent(h, backend, before)

    def test_coding_before_chunked_is_501(self) -> None:
        """
        gzip before chunked, in one line or two, is 501 (RFC 9112 6.1),
        never forwarded as plain chunked with the body still coded.
        """
        h = Harness(backends=1)
        backend, before = self.warm(h)
        for codings in (b"gzip, chunked", b"gzip\r\nTransfer-Encoding: chunked"):
            client = h.client()
            client.send(
                b"POST /refused HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
                + codings
                + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            self.assertEqual(status(client.received()), 501, codings)
            self.assert_nothing_sent(h, backend, before)

    def test_invalid_host_is_400(self) -> None:
        """An invalid Host or absolute-form authority: 400, nothing started."""
        h = Harness(backends=1)
        backend, before = self.warm(h)
        for request in (
            b"GET /refused HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET /refused HTTP/1.1\r\nHost: \xc3\xa9.example\r\n\r\n",
            b"GET /refused HTTP/1.1\r\nHost: evil.example/x@a\r\n\r\n",
            b"GET /refused HTTP/1.0\r\nHost: a:b\r\n\r\n",
            b"GET http://user@a/refused HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://a:b/refused HTTP/1.1\r\nHost: a\r\n\r\n",
        ):
            client = h.client()
            client.send(request)
            self.assertEqual(status(client.received()), 400, request)
            self.assertIn(b"invalid ", client.received())
            self.assert_nothing_sent(h, backend, before)

    def test_broken_first_chunk_sends_nothing(self) -> None:
        """
        A chunked body broken in the head's own read, or over max_body_size
        in its first piece, is refused before the head went anywhere.
        """
        h = Harness(backends=1, extra="max_body_size = 4\n")
        backend, before = self.warm(h)
        head = (
            b"POST /refused HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for body, code in ((b"zz\r\n", 400), (b"5\r\nhello\r\n", 413)):
            client = h.client()
            client.send(head + body)
            self.assertEqual(status(client.received()), code, body)
            self.assert_nothing_sent(h, backend, before)

    def test_head_alone_starts_when_its_read_ends(self) -> None:
        """
        A valid head that arrives without its body is started once its read
        is parsed, so the body streams as it comes.
        """
        h = Harness(backends=1)
        backend, before = self.warm(h)
        client = h.client()
        client.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        sent = backend.received()[len(before) :]
        self.assertTrue(sent.startswith(b"POST /up HTTP/1.1\r\n"), sent)
        self.assertTrue(sent.endswith(b"\r\n\r\n"), sent)
        client.send(b"hello")
        self.assertTrue(backend.received().endswith(b"\r\n\r\nhello"))
        backend.reply(OK)
        self.assertTrue(client.received().endswith(b"\r\n\r\nok"))

    def test_pipelined_good_then_refused(self) -> None:
        """
        A good GET and a refused POST in one read: the GET is answered, the
        POST gets its 400, and the backend never sees the POST.
        """
        h = Harness(backends=1)
        backend, _ = self.warm(h)
        client = h.client()
        client.send(
            GET + b"POST /refused HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip"
            b"\r\n\r\n0\r\n\r\n"
        )
        backend.reply(OK)
        response = client.received()
        self.assertIn(b"\r\n\r\nokHTTP/1.1 400 Bad Request\r\n", response)
        self.assertNotIn(b"/refused", backend.received())
        self.assertEqual(h.active(), [0])

    def test_malformed_line_after_a_good_request_is_400(self) -> None:
        """
        After a good GET in the same read, a malformed request line is 400
        and an unknown method 501: the failing line is judged, not the GET's.
        """
        for line, code in ((b"G(T / HTTP/1.1", 400), (b"FOO / HTTP/1.1", 501)):
            h = Harness(backends=1)
            client = h.client()
            client.send(GET + line + b"\r\nHost: a\r\n\r\n")
            h.accept().reply(OK)
            responses = client.received().split(b"HTTP/1.1 ")[1:]
            self.assertEqual([status(b"x " + r) for r in responses], [200, code])
            self.assertFalse(client.transport.connected)
