"""
The demo backend: a Klein app bound to one L{DemoBackend} instance.

Routes (every response carries C{X-Backend: <name>} and
C{Server: txlb-demo-backend}):

  - C{GET /health}: 200 C{ok}, or 503 C{failing} once switched to fail.
  - C{PUT|POST /_demo/health}, C{/_demo/error-rate}, C{/_demo/delay}: change
    a setting at runtime from the request body (C{fail}/C{ok}, C{0.5},
    C{20ms} or C{10ms-30ms}); 400 on a bad value.
  - C{GET /_demo/stats}: JSON counters and settings.
  - C{/_demo/echo} (any method): JSON of the request as it arrived.
  - C{/_demo/status/<code>}: that status code.
  - C{GET /_demo/bytes?n=N&chunk=C[&chunked=1]}: N pattern bytes, streamed
    with back-pressure (see L{backends.streams}).
  - C{PUT|POST /_demo/upload}: JSON length and SHA-256 of the body.
  - C{GET /_demo/sleep?ms=N}: answers after N milliseconds.
  - C{GET /_demo/ws}: a WebSocket echo (see L{backends.echo}); 400 if the
    request is not a WebSocket handshake.
  - anything else is the main route: maybe an injected 500, else a wait for
    a service slot (FIFO), then the service time, then C{hello from <name>}.
"""

from __future__ import annotations

import hashlib
import json
from random import Random
from typing import IO, Any, ClassVar

import attrs
from klein import Klein
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from backends.echo import accept_websocket
from backends.settings import (
    NO_DELAY,
    ServiceTime,
    SettingError,
    parse_error_rate,
    parse_service_time,
)
from backends.streams import PatternProducer

__all__ = ["SERVER", "DemoBackend"]

SERVER = b"txlb-demo-backend"
_READ_SIZE = 64 * 1024
_MAX_CHUNK = 1024 * 1024
_MAX_CONTROL_BODY = 1024


# Not slotted: Klein keeps the app bound to an instance as an attribute of it.
@attrs.define(slots=False, eq=False)
class DemoBackend:
    """
    One demo backend's state and routes.

    @ivar name: sent in C{X-Backend} and the main route's body.
    @ivar clock: times the service time and C{/_demo/sleep}.
    @ivar service_time: how long the main route takes once in service.
    @ivar capacity: requests in service at once; 0 is unlimited.  Fixed.
    @ivar error_rate: fraction of main-route requests answered 500 at once.
    @ivar rng: draws errors and service times.
    @ivar healthy: what C{/health} reports.
    """

    app: ClassVar[Klein] = Klein()
    log: ClassVar[Logger] = Logger()

    name: str
    clock: IReactorTime
    service_time: ServiceTime = NO_DELAY
    capacity: int = attrs.field(
        default=0,
        validator=attrs.validators.ge(0),
        on_setattr=attrs.setters.frozen,
    )
    error_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    rng: Random = attrs.field(factory=Random)
    healthy: bool = True

    requests: int = attrs.field(default=0, init=False)
    completed: int = attrs.field(default=0, init=False)
    errors: int = attrs.field(default=0, init=False)
    abandoned: int = attrs.field(default=0, init=False)
    in_service: int = attrs.field(default=0, init=False)
    # The most requests ever in service or queued here at once.
    peak_in_flight: int = attrs.field(default=0, init=False)
    queued: int = attrs.field(default=0, init=False)
    _semaphore: DeferredSemaphore | None = attrs.field(init=False)

    @_semaphore.default
    def _make_semaphore(self) -> DeferredSemaphore | None:
        return DeferredSemaphore(self.capacity) if self.capacity else None

    def resource(self) -> IResource:
        """The twisted.web resource serving this backend."""
        return _Branded(self.app.resource(), self.name.encode("utf-8"))

    def stats(self) -> dict[str, Any]:
        """
        Counters and settings, as C{/_demo/stats} reports them.

        C{requests} counts every main-route request as it arrives, the
        injected C{errors} and the C{abandoned} (client gone) included.
        """
        return {
            "name": self.name,
            "requests": self.requests,
            "in_service": self.in_service,
            "peak_in_flight": self.peak_in_flight,
            "queued": self.queued,
            "healthy": self.healthy,
            "completed": self.completed,
            "errors": self.errors,
            "abandoned": self.abandoned,
            "capacity": self.capacity,
            "delay": str(self.service_time),
            "error_rate": self.error_rate,
        }

    def _acquire(self) -> Deferred[Any]:
        if self._semaphore is None:
            return succeed(None)
        return self._semaphore.acquire()

    def _release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()

    # Health and runtime control.

    @app.route("/health", methods=["GET", "HEAD"])
    def health(self, request: Request) -> bytes:
        if self.healthy:
            return _text(request, "ok")
        request.setResponseCode(503)
        return _text(request, "failing")

    @app.route("/_demo/health", methods=["PUT", "POST"])
    def set_health(self, request: Request) -> bytes:
        value = _control_body(request).lower()
        if value not in ("ok", "fail"):
            return _bad_request(
                request, f"invalid health {value!r}: expected ok or fail"
            )
        self.healthy = value == "ok"
        self.log.info(
            "backend {name} health set to {value}", name=self.name, value=value
        )
        return _text(request, value)

    @app.route("/_demo/error-rate", methods=["PUT", "POST"])
    def set_error_rate(self, request: Request) -> bytes:
        try:
            self.error_rate = parse_error_rate(_control_body(request))
        except SettingError as e:
            return _bad_request(request, str(e))
        self.log.info(
            "backend {name} error rate set to {rate}",
            name=self.name,
            rate=self.error_rate,
        )
        return _text(request, f"{self.error_rate:g}")

    @app.route("/_demo/delay", methods=["PUT", "POST"])
    def set_delay(self, request: Request) -> bytes:
        try:
            self.service_time = parse_service_time(_control_body(request))
        except SettingError as e:
            return _bad_request(request, str(e))
        self.log.info(
            "backend {name} delay set to {delay}",
            name=self.name,
            delay=str(self.service_time),
        )
        return _text(request, str(self.service_time))

    @app.route("/_demo/stats", methods=["GET", "HEAD"])
    def show_stats(self, request: Request) -> bytes:
        return _json(request, self.stats())

    # Helpers for testing the proxy.

    @app.route("/_demo/echo")
    def echo(self, request: Request) -> bytes:
        client = request.getClientAddress()
        content = _content(request)
        content.seek(0, 2)
        return _json(
            request,
            {
                "method": request.method.decode("latin-1"),
                "uri": request.uri.decode("latin-1"),
                "headers": [
                    [name.decode("latin-1"), value.decode("latin-1")]
                    for name, values in request.requestHeaders.getAllRawHeaders()
                    for value in values
                ],
                "body_length": content.tell(),
                "client": getattr(client, "host", str(client)),
            },
        )

    @app.route("/_demo/status/<code>")
    def status(self, request: Request, code: str) -> bytes:
        if not (code.isdigit() and 200 <= int(code) <= 599):
            return _bad_request(
                request, f"invalid status {code!r}: expected 200 to 599"
            )
        request.setResponseCode(int(code))
        return _text(request, f"status {code}")

    @app.route("/_demo/bytes", methods=["GET", "HEAD"])
    def stream_bytes(self, request: Request) -> bytes | Deferred[None]:
        try:
            length = _int_arg(request, "n", None, 0, 2**50)
            chunk = _int_arg(request, "chunk", _READ_SIZE, 1, _MAX_CHUNK)
            chunked = _int_arg(request, "chunked", 0, 0, 1)
        except SettingError as e:
            return _bad_request(request, str(e))
        request.setHeader(b"content-type", b"application/octet-stream")
        if not chunked:
            request.setHeader(b"content-length", b"%d" % (length,))
        producer = PatternProducer(request, length, chunk)
        request.registerProducer(producer, True)
        request.notifyFinish().addErrback(lambda _: producer.stopProducing())
        return producer.start()

    @app.route("/_demo/upload", methods=["PUT", "POST"])
    def upload(self, request: Request) -> bytes:
        digest = hashlib.sha256()
        length = 0
        content = _content(request)
        content.seek(0)
        while piece := content.read(_READ_SIZE):
            length += len(piece)
            digest.update(piece)
        return _json(request, {"length": length, "sha256": digest.hexdigest()})

    @app.route("/_demo/sleep", methods=["GET", "HEAD"])
    def sleep(self, request: Request) -> bytes | Deferred[bytes]:
        try:
            ms = _int_arg(request, "ms", None, 0, 24 * 3600 * 1000)
        except SettingError as e:
            return _bad_request(request, str(e))
        body = _text(request, f"slept {ms}ms")
        slept = deferLater(self.clock, ms / 1000, lambda: body)
        request.notifyFinish().addErrback(lambda _: slept.cancel())
        return slept

    @app.route("/_demo/ws", methods=["GET"])
    def websocket(self, request: Request) -> bytes | Deferred[None]:
        if accept_websocket(request):
            # The connection is the echo's now; twisted.web sends nothing.
            return Deferred()
        return _bad_request(request, "expected a WebSocket (version 13) handshake")

    # The main route.

    @app.route("/", branch=True)
    def serve(self, request: Request) -> bytes | Deferred[bytes]:
        self.requests += 1
        if self.error_rate and self.rng.random() < self.error_rate:
            self.errors += 1
            request.setResponseCode(500)
            return _text(request, f"injected error from {self.name}")
        visit = _Visit(self, _text(request, f"hello from {self.name}"))
        request.notifyFinish().addErrback(visit.abandon)
        return visit.begin()


@attrs.define(eq=False)
class _Visit:
    """
    One main-route request: queued for a slot, then in service, then done.

    The slot is released exactly once, whether the service time ends or the
    client leaves first (L{abandon} may be called any number of times).
    """

    _backend: DemoBackend
    _body: bytes
    _phase: str = "new"
    _waiting: Deferred[Any] | None = None
    _timer: IDelayedCall | None = None
    _done: Deferred[bytes] = attrs.field(init=False)

    @_done.default
    def _make_done(self) -> Deferred[bytes]:
        return Deferred(self.abandon)

    def begin(self) -> Deferred[bytes]:
        """Join the queue; the result fires with the body when served."""
        self._phase = "queued"
        backend = self._backend
        backend.queued += 1
        backend.peak_in_flight = max(
            backend.peak_in_flight, backend.queued + backend.in_service
        )
        self._waiting = self._backend._acquire()
        self._waiting.addCallbacks(self._serve, _ignore_cancel)
        return self._done

    def _serve(self, _: object) -> None:
        backend = self._backend
        backend.queued -= 1
        backend.in_service += 1
        self._phase = "serving"
        seconds = backend.service_time.sample(backend.rng)
        if seconds > 0:
            self._timer = backend.clock.callLater(seconds, self._finish)
        else:
            self._finish()

    def _leave(self) -> None:
        self._phase = "done"
        self._backend.in_service -= 1
        self._backend._release()

    def _finish(self) -> None:
        self._leave()
        self._backend.completed += 1
        self._done.callback(self._body)

    def abandon(self, _: object = None) -> None:
        """The client left: leave the queue or free the slot."""
        if self._phase == "queued":
            self._phase = "done"
            self._backend.queued -= 1
            self._backend.abandoned += 1
            assert self._waiting is not None
            self._waiting.cancel()
        elif self._phase == "serving":
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._backend.abandoned += 1
            self._leave()


def _ignore_cancel(failure: Failure) -> None:
    failure.trap(CancelledError)


class _Branded(Resource):
    """Wrap a resource so every response names the backend and server."""

    isLeaf = True

    def __init__(self, inner: IResource, name: bytes) -> None:
        super().__init__()
        self._inner = inner
        self._name = name

    def render(self, request: Request) -> Any:
        request.setHeader(b"server", SERVER)
        request.setHeader(b"x-backend", self._name)
        return self._inner.render(request)


def _body(request: Request, content_type: bytes, body: bytes) -> bytes:
    # Klein writes the body after render() returns, so twisted.web would
    # fall back to chunked encoding; say the length as a real server would.
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % (len(body),))
    return body


def _text(request: Request, line: str) -> bytes:
    return _body(request, b"text/plain; charset=utf-8", f"{line}\n".encode())


def _json(request: Request, value: object) -> bytes:
    return _body(request, b"application/json", json.dumps(value).encode() + b"\n")


def _bad_request(request: Request, message: str) -> bytes:
    request.setResponseCode(400)
    return _text(request, message)


def _content(request: Request) -> IO[bytes]:
    content: IO[bytes] | None = request.content
    assert content is not None, "twisted.web always sets it"
    return content


def _control_body(request: Request) -> str:
    return _content(request).read(_MAX_CONTROL_BODY).decode("utf-8", "replace").strip()


def _int_arg(
    request: Request, name: str, default: int | None, low: int, high: int
) -> int:
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode())
    if not values:
        if default is None:
            raise SettingError(f"missing query parameter {name}")
        return default
    text = values[0].decode("latin-1")
    try:
        value = int(text)
    except ValueError:
        raise SettingError(
            f"invalid {name} {text!r}: expected a whole number"
        ) from None
    if not low <= value <= high:
        raise SettingError(f"invalid {name} {text!r}: must be from {low} to {high}")
    return value
