"""
The HTTP/1.1 front end: client connections parsed strictly by llhttp (the C
parser behind httptools), their requests answered one at a time, in order.

Strict parsing is the edge's defence against request smuggling.  llhttp
rejects bare LF line endings, obs-fold, invalid header names and values,
C{Content-Length} next to C{Transfer-Encoding}, a duplicate or invalid
C{Content-Length}, a C{Transfer-Encoding} that does not end in C{chunked}
and invalid chunk sizes.  What llhttp leaves to a server is judged by
L{txlb.http.head}: HTTP/1.0 and 1.1 only, one valid C{Host}, no coding but
C{chunked}, the request-target's forms (C{CONNECT} is refused) and the
body size limit; this module adds the head's limits (431, 414).  A
rejected request is answered and its connection closed; nothing of it
reaches a backend.  llhttp gives some verdicts on a
head only after C{on_headers_complete} has returned, so a request is
handed on only once llhttp has gone past its head without error (its body
has begun, it is complete, or the read ended).

Deadlines stop slow clients from holding connections: the head must arrive
within C{header_timeout} (from the connection's start, then from a request's
first byte: a total, not an idle timer a byte at a time can reset); a body
within C{body_timeout}, extended by a second per C{body_min_rate} bytes
received; an idle keep-alive connection is closed after
C{keepalive_timeout}; a client that reads none of its response for
C{client_timeout} is disconnected (the backend is paused meanwhile, never
buffered).

Pipelining: llhttp parses all it is given, so a request that arrives while
another is answered waits, with its body, in a queue; the connection stops
reading until the queue is answered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

import httptools
from twisted.internet.interfaces import IPushProducer, IReactorTime, ISSLTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from txlb.config import ClientConfig
from txlb.http import wire
from txlb.http.head import Refused, judge
from txlb.http.request import ClientRequest, ResponseFlow
from txlb.http.requestline import method_error
from txlb.net import fastio
from txlb.net.admission import ClientLimit, IdleConnections, Refuse
from txlb.net.deadline import Deadline

__all__ = ["HTTPFrontend", "HTTPFrontendFactory"]


class HTTPFrontend(Protocol):
    """One client connection (see the module docstring)."""

    log = Logger()

    def __init__(self, factory: HTTPFrontendFactory) -> None:
        self.factory = factory
        self.limits = factory.limits
        self.clock = factory.clock
        self.peer = ""
        self.local_host = ""
        self.secure = False
        self.closing = False
        self._parser = httptools.HttpRequestParser(self)
        # The request being parsed, the one being answered, those waiting.
        self._incoming: ClientRequest | None = None
        self._active: ClientRequest | None = None
        self._queue: deque[ClientRequest] = deque()
        # Answered (then the connection closes) once the queue is done.
        self._failure: Refused | None = None
        self._reject: Refused | None = None
        # A request whose head passed the checks here, held until llhttp
        # has accepted it too (see _release).
        self._held: ClientRequest | None = None
        self._paused: set[str] = set()
        # The deadline in force: its phase (head, body, idle or none).
        self._phase = ""
        self._deadline = Deadline(self.clock, self._expired)
        self._flow: ResponseFlow | None = None
        self._upgrade: bytes | None = None
        self._gone = False

    # --- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.peer = str(getattr(transport.getPeer(), "host", ""))
        self.local_host = str(getattr(transport.getHost(), "host", ""))
        self.secure = ISSLTransport.providedBy(transport) is True
        self.factory.connections.add(self)
        self._arm("head", self.limits.header_timeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone = True
        self._parser = _CLOSED
        self.factory.connections.discard(self)
        self._stop_timer()
        if self._flow is not None:
            self._flow.cancel()
            self._flow = None
        active, self._active = self._active, None
        self._queue.clear()
        if active is not None and active.handler is not None:
            active.handler.client_lost()
            active.handler = None

    def dataReceived(self, data: bytes) -> None:
        if self._upgrade is not None:
            # Past an Upgrade request's head: the new protocol's bytes.
            self._upgrade += data
            return
        if self._failure is not None:
            return
        between_requests = self._incoming is None
        if between_requests and self._phase != "head":
            self._arm("head", self.limits.header_timeout)
            if self.factory.idle is not None:
                self.factory.idle.working(self)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade = data[e.args[0] :]
            self.pause("upgrade")
            if self._held is not None:
                self._release()
        except httptools.HttpParserCallbackError as e:
            reject = self._reject or Refused(400, f"{e.__context__ or e}")
            self._fail(reject)
            return
        except httptools.HttpParserInvalidMethodError:
            self._fail(Refused(*method_error(data, between_requests)))
            return
        except httptools.HttpParserError as e:
            self._fail(Refused(400, str(e)))
            return
        if self._held is not None:
            # A head that came without its body (or with all of it but
            # in a read that ended there): llhttp went past it unharmed.
            self._release()

    # --- llhttp's callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        self._incoming = ClientRequest(self)
        if self._phase != "head":
            # A pipelined request, begun in the same read as the last one.
            self._arm("head", self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        request = self._incoming
        assert request is not None
        request.uri += url
        if len(request.uri) > self.limits.max_uri_length:
            self._refuse(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._incoming
        assert request is not None
        request.head_bytes += len(name) + len(value) + 4
        if request.head_bytes > self.limits.max_header_size:
            self._refuse(431, "request head too large")
        request.headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        request = self._incoming
        assert request is not None
        parser = self._parser
        method = parser.get_method() or b""
        try:
            judge(
                request,
                parser.get_http_version(),
                method,
                parser.should_keep_alive(),
                self.limits,
            )
        except Refused as refused:
            self._reject = refused
            raise
        if request.body_length == 0:
            self._disarm()
        else:
            self._arm("body", self.limits.body_timeout)
        # llhttp still judges the head after this returns (an unknown final
        # coding, for one): nothing may go towards a backend before it has.
        self._held = request

    def on_body(self, data: bytes) -> None:
        request = self._incoming
        assert request is not None
        request.body_received += len(data)
        limit = self.limits.max_body_size
        if limit and request.body_received > limit:
            self._refuse(413, "body over max_body_size")
        if self._held is not None:
            self._release()
        rate = self.limits.body_min_rate
        if rate:
            self._deadline.at += len(data) / rate
        handler = request.handler
        if handler is not None and request is self._active:
            handler.client_body(data)
        else:
            request.body.append(data)

    def on_message_complete(self) -> None:
        request = self._incoming
        assert request is not None
        self._incoming = None
        self._disarm()
        if self._held is not None:
            # Handed over as the head would have been, then told it is
            # complete, as a request whose body came later is.
            self._release()
        request.complete = True
        if request is self._active and request.handler is not None:
            request.handler.client_body_done()

    # --- requests -----------------------------------------------------------------

    def _refuse(self, status: int, why: str) -> NoReturn:
        """Reject the request being parsed (raised through llhttp)."""
        self._reject = Refused(status, why)
        raise self._reject

    def _release(self) -> None:
        """
        llhttp has gone past the held request's head without error (it is
        parsing the body, or the request is complete, or the read ended):
        start it, or queue it behind the one being answered.
        """
        request, self._held = self._held, None
        assert request is not None
        if self._active is None:
            self._start(request)
        else:
            self._queue.append(request)
            self.pause("pipeline")

    def _start(self, request: ClientRequest) -> None:
        self._active = request
        if request.expect_continue:
            # The client waits for this before sending its body (nginx and
            # twisted.web answer it themselves too); the backend is not
            # asked, so it does not send one of its own.
            request.headers = [
                (n, v) for n, v in request.headers if n.lower() != b"expect"
            ]
            if not request.complete and request.version == b"HTTP/1.1":
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.factory.handle(request)

    def response_done(self, request: ClientRequest, close: bool) -> None:
        """The active request's response is all written."""
        if self._flow is not None:
            self.set_response_producer(None)
        # The handler refers to the request: without this the pair would be
        # garbage only the cycle collector can free (a pause under load).
        request.handler = None
        if self._gone or request is not self._active:
            return
        self._active = None
        if close or self.closing:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if self._upgrade is not None:
            # An upgrade the backend declined: llhttp cannot go on parsing.
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if self._queue:
            # On the next turn: the backend connection that just answered
            # goes back to its pool first, and may take the next request.
            self.clock.callLater(0, self._next)
            return
        self.resume("pipeline")
        if self._failure is not None:
            self._answer_failure(self._failure)
        elif self._incoming is None:
            self._arm("idle", self.limits.keepalive_timeout)
            if self.factory.idle is not None:
                self.factory.idle.resting(self)

    def _next(self) -> None:
        if self._gone or self._active is not None or not self._queue:
            return
        self._start(self._queue.popleft())
        if not self._queue:
            self.resume("pipeline")

    def _fail(self, reject: Refused) -> None:
        """
        A request was invalid: answer it once those before it are answered,
        then close.  An active request whose body broke is abandoned.
        """
        self._reject = None
        self._held = None
        self._disarm()
        self.pause("failed")
        incoming, self._incoming = self._incoming, None
        active = self._active
        if active is not None and incoming is active:
            # The request being answered sent a bad body: it cannot be
            # completed, so neither can its response.
            self._active = None
            if active.handler is not None:
                active.handler.client_failed()
                active.handler = None
            if active.started:
                self.abort()
                return
            active = None
        self.log.info(
            "client {peer}: {status} {why}",
            peer=self.peer,
            status=reject.status,
            why=reject.why,
        )
        self._failure = reject
        if active is None and not self._queue:
            self._answer_failure(reject)

    def _answer_failure(self, reject: Refused) -> None:
        self.factory.rejected += 1
        self.send(wire.plain(reject.status, reject.why))
        self.transport.loseConnection()  # type: ignore[union-attr]

    # --- for the handlers ---------------------------------------------------------

    def send(self, data: bytes) -> None:
        fastio.write(self.transport, data)

    def abort(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]

    def pause(self, reason: str) -> None:
        if not self._paused:
            self.transport.pauseProducing()  # type: ignore[union-attr]
            if self._phase == "body":
                # Not read, the client is not late: its body's deadline
                # starts again when reading does (nginx's client_body_timeout).
                self._deadline.clear()
        self._paused.add(reason)

    def resume(self, reason: str) -> None:
        paused = self._paused
        if reason in paused:
            paused.discard(reason)
            if not paused and not self._gone:
                self.transport.resumeProducing()  # type: ignore[union-attr]
                if self._phase == "body":
                    self._deadline.set(self.limits.body_timeout)

    def set_response_producer(self, producer: IPushProducer | None) -> None:
        transport: Any = self.transport
        flow = self._flow
        if flow is not None:
            flow.cancel()
            self._flow = None
            if transport.producer is flow:
                transport.unregisterProducer()
        if producer is not None:
            self._flow = ResponseFlow(self, producer)
            transport.registerProducer(self._flow, True)

    def take_over(self) -> tuple[Any, bytes]:
        self._stop_timer()
        self._active = None
        early, self._upgrade = self._upgrade or b"", None
        self._gone = True
        self._parser = _CLOSED
        self.factory.connections.discard(self)
        transport: Any = self.transport
        if self._flow is not None:
            self.set_response_producer(None)
        if self._paused:
            self._paused.clear()
            transport.resumeProducing()
        return transport, early

    def settle(self) -> bool:
        """
        Prepare for a shutdown: close after the response in progress.

        @return: whether the connection can be closed now (idle, or busy
            only with the stats app, whose event stream may never end).
        """
        self.closing = True
        active = self._active
        handler = active.handler if active is not None else None
        busy = handler is not None and handler.waited_for
        return not busy and not self._queue and self._incoming is None

    # --- deadlines ----------------------------------------------------------------

    def _arm(self, phase: str, seconds: float) -> None:
        """Start a deadline (one timer serves them all: L{Deadline})."""
        self._phase = phase
        self._deadline.set(seconds)

    def _disarm(self) -> None:
        self._phase = ""
        self._deadline.clear()

    def _stop_timer(self) -> None:
        self._phase = ""
        self._deadline.stop()

    def _expired(self) -> None:
        phase, self._phase = self._phase, ""
        if phase == "idle":
            self.transport.loseConnection()  # type: ignore[union-attr]
        elif phase == "head":
            self._fail(Refused(408, "request head not received in time"))
        elif phase == "body":
            self._fail(Refused(408, "request body not received in time"))


class HTTPFrontendFactory(Factory):
    """
    Builds the front end's connections, refusing those over C{max_clients}
    with a 503, and hands each request to C{handle}, which gives it its
    handler (L{txlb.http.request.RequestHandler}).
    """

    noisy = False

    def __init__(
        self,
        limits: ClientConfig,
        clock: IReactorTime,
        handle: Callable[[ClientRequest], None],
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.handle = handle
        self.connections: set[HTTPFrontend] = set()
        # Told of keep-alive connections resting between requests (workers).
        self.idle: IdleConnections | None = None
        self.limit = ClientLimit(limits.max_clients, clock)
        self.rejected = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        if not self.limit.admit(self.connections):
            return Refuse(wire.plain(503, "too many connections", retry_after=b"1"))
        return HTTPFrontend(self)


# What a connection's parser becomes once it is closed or taken over: llhttp
# holds the protocol's bound methods, a reference cycle that only the cycle
# collector would free (and tune_gc's thresholds make its full passes rare).
_CLOSED = httptools.HttpRequestParser(None)
