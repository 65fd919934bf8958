"""
The front end (L{txlb.http.frontend}) alone, against a stub
L{txlb.http.request.RequestHandler}: what a handler is told, in which
order, and what it can answer, with no proxy behind it.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.relay_support import FakeTCP
from tests.support import config
from txlb.http.frontend import HTTPFrontend, HTTPFrontendFactory
from txlb.http.request import ClientRequest, RequestHandler


class StubHandler:
    """A handler that records what the front end tells it."""

    def __init__(self, request: ClientRequest, waited_for: bool = True) -> None:
        self.request = request
        self.waited_for = waited_for
        self.events: list[tuple[str, bytes]] = []

    def client_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def client_body_done(self) -> None:
        self.events.append(("done", b""))

    def client_failed(self) -> None:
        self.events.append(("failed", b""))

    def client_lost(self) -> None:
        self.events.append(("lost", b""))

    def answer(self, body: bytes = b"hello") -> None:
        """A whole 200 response with a Content-Length."""
        request = self.request
        request.respond(200, b"OK", [(b"Content-Length", b"%d" % len(body))], True)
        request.write(body)
        request.finish()


class Front:
    """A front end whose every request gets a L{StubHandler}."""

    def __init__(self, extra: str = "", waited_for: bool = True) -> None:
        self.clock = MemoryReactorClock()
        self.handlers: list[StubHandler] = []
        self.waited_for = waited_for
        limits = config(1, extra).client
        self.factory = HTTPFrontendFactory(limits, self.clock, self._handle)
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        assert isinstance(protocol, HTTPFrontend)
        self.protocol = protocol
        self.transport = FakeTCP()
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)

    def _handle(self, request: ClientRequest) -> None:
        handler: RequestHandler = StubHandler(request, self.waited_for)
        request.handler = handler
        assert isinstance(handler, StubHandler)
        self.handlers.append(handler)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        return self.transport.value()


GET = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-One: 1\r\n\r\n"


class HandlerTests(SynchronousTestCase):
    def test_request_head(self) -> None:
        """A request is handed over once, its head parsed, and told when it is
        complete (at once for a request without a body)."""
        front = Front()
        front.send(GET)
        (handler,) = front.handlers
        request = handler.request
        self.assertEqual(
            (request.method, request.uri, request.version, request.host),
            (b"GET", b"/a?b=1", b"HTTP/1.1", b"example.com"),
        )
        self.assertEqual(request.value(b"x-one"), b"1")
        self.assertEqual((request.body_length, request.complete), (0, True))
        self.assertEqual(handler.events, [("done", b"")])

    def test_answer_and_keep_alive(self) -> None:
        """The handler's response goes out in one write, framed, and the
        connection waits for the next request."""
        front = Front()
        front.send(GET)
        front.handlers[0].answer()
        self.assertEqual(
            front.received(), b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertFalse(front.transport.disconnecting)
        front.send(GET)
        self.assertEqual(len(front.handlers), 2)

    def test_body_streams_in_order(self) -> None:
        """A chunked body reaches the handler piece by piece, then its end."""
        front = Front()
        front.send(
            b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        (handler,) = front.handlers
        self.assertIsNone(handler.request.body_length)
        front.send(b"3\r\nabc\r\n")
        front.send(b"2\r\nde\r\n0\r\n\r\n")
        self.assertEqual(
            handler.events, [("body", b"abc"), ("body", b"de"), ("done", b"")]
        )

    def test_pipelined_one_at_a_time(self) -> None:
        """Requests sent together are handed over one at a time, in order."""
        front = Front()
        front.send(GET + GET.replace(b"/a?b=1", b"/second"))
        self.assertEqual([h.request.uri for h in front.handlers], [b"/a?b=1"])
        front.handlers[0].answer(b"one")
        front.clock.advance(0)
        self.assertEqual(
            [h.request.uri for h in front.handlers], [b"/a?b=1", b"/second"]
        )

    def test_client_lost_once(self) -> None:
        """A client that leaves mid-body: the handler hears it, once."""
        front = Front()
        front.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab")
        (handler,) = front.handlers
        front.transport.loseConnection()
        self.assertEqual(handler.events, [("body", b"ab"), ("lost", b"")])

    def test_no_news_after_the_response(self) -> None:
        """Once its response is done, a handler hears nothing more."""
        front = Front()
        front.send(GET)
        front.handlers[0].answer()
        front.transport.loseConnection()
        self.assertEqual(front.handlers[0].events, [("done", b"")])

    def test_broken_body_fails_the_handler(self) -> None:
        """A bad chunk: the handler is told the request failed; the front end
        answers 400 and closes."""
        front = Front()
        front.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        (handler,) = front.handlers
        front.send(b"zz\r\nnot hex\r\n")
        self.assertEqual(handler.events, [("failed", b"")])
        self.assertTrue(front.received().startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertTrue(front.transport.disconnecting)

    def test_reply_is_txlb_s_plain_answer(self) -> None:
        """L{ClientRequest.reply}: a plain-text answer with its length, Date and
        Retry-After, keeping the connection open for HTTP/1.1."""
        front = Front()
        front.send(GET)
        front.handlers[0].request.reply(503, b"busy", retry_after=b"2")
        head, _, body = front.received().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 503 Service Unavailable")
        self.assertIn(b"Retry-After: 2", lines)
        self.assertIn(b"Content-Length: 5", lines)
        self.assertTrue(any(line.startswith(b"Date: ") for line in lines))
        self.assertNotIn(b"Connection: close", lines)
        self.assertEqual(body, b"busy\n")
        self.assertFalse(front.transport.disconnecting)

    def test_settle_asks_the_handler(self) -> None:
        """A shutdown waits for a handler that is waited for, and not for one
        that is not (the stats app's event stream)."""
        waited, not_waited = Front(), Front(waited_for=False)
        for front in (waited, not_waited):
            front.send(GET)
        self.assertFalse(waited.protocol.settle())
        self.assertTrue(not_waited.protocol.settle())
