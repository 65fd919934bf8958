"""
The stats app: a Klein app bound to one registry, serving the JSON API,
Server-Sent Events, Prometheus metrics, the dashboard and the admin
actions.

Routes (all answers carry a C{Content-Security-Policy} that forbids inline
script, and the API answers C{Cache-Control: no-store}):

  - C{GET /api/server-stats}: L{txlb.stats.Stats.snapshot} as JSON.
  - C{GET /api/events}: the same snapshot as Server-Sent Events
    (C{event: stats}), C{events_rate} times a second.
  - C{GET /api/history?seconds=N}: once-a-second samples for the charts.
  - C{GET /api/decisions?limit=N}: the latest balancing decisions, explained.
  - C{GET /api/admin}: whether admin actions are on.
  - C{POST /api/backends/NAME/drain}, C{.../enable}, C{.../weight} (JSON body
    C{{"weight": 2}}): admin actions, with C{Authorization: Bearer TOKEN}.
  - C{GET /metrics}: Prometheus exposition.
  - C{GET /dashboard/}: the dashboard (files of C{web/}, loaded at start).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException
from zope.interface import implementer

from txlb.core.decisions import RATE as DECISION_RATE
from txlb.core.decisions import SIZE as DECISION_SIZE
from txlb.core.registry import MAX_WEIGHT, Backend, Registry
from txlb.observe.metrics import Metrics
from txlb.observe.stats import HISTORY_POINTS, Stats
from txlb.observe.webfiles import missing, unavailable_page

__all__ = [
    "CSP",
    "AdminTokenError",
    "StatsApp",
    "WebAssets",
    "find_web_root",
    "read_admin_token",
]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'none'"
)
"""No inline script or style, nothing from another origin."""

_SECURITY_HEADERS = (
    (b"Content-Security-Policy", CSP.encode("ascii")),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
)

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".map": "application/json",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}

# RFC 6750 b64token.
_BEARER = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MIN_TOKEN_LENGTH = 16
_MAX_BODY = 4096


class AdminTokenError(Exception):
    """The admin token file is unreadable or unfit; C{str()} says why."""


def read_admin_token(path: str) -> bytes:
    """
    Read the admin token from C{path} (at start-up, never per request).

    Surrounding whitespace is ignored.

    @raise AdminTokenError: unreadable, or not at least 16 characters of
        C{A-Z a-z 0-9 - . _ ~ + /} (then C{=} padding).
    """
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise AdminTokenError(f"cannot read {path!r}: {reason}") from None
    if len(token) < _MIN_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
        raise AdminTokenError(
            f"{path!r} must hold one token of at least {_MIN_TOKEN_LENGTH}"
            " characters from A-Z a-z 0-9 - . _ ~ + / (e.g. from"
            " `openssl rand -hex 32`)"
        )
    return token.encode("ascii")


def find_web_root() -> Path:
    """
    The dashboard's files: C{txlb/web} in an installed copy, else C{web/}
    beside the C{txlb} package in a source checkout.

    @raise FileNotFoundError: neither has an C{index.html}.
    """
    here = Path(__file__).resolve().parent.parent  # the txlb package
    for candidate in (here / "web", here.parent / "web"):
        if (candidate / "index.html").is_file():
            return candidate
    raise FileNotFoundError(f"no dashboard files (index.html) in {here / 'web'}")


@attrs.frozen
class _Asset:
    body: bytes
    content_type: str
    etag: bytes


@attrs.frozen
class WebAssets:
    """
    The dashboard's files, read once at start-up and served from memory.

    @ivar root: where they were read from (or looked for).
    """

    files: dict[str, _Asset]
    root: str = ""

    @classmethod
    def find(cls) -> WebAssets:
        """
        The files where L{find_web_root} finds them, or none, looked for in
        the installed package, if it finds no index.html.
        """
        try:
            return cls.load(find_web_root())
        except FileNotFoundError:
            return cls({}, str(Path(__file__).resolve().parent.parent / "web"))

    @property
    def missing(self) -> tuple[str, ...]:
        """The files the dashboard cannot work without that are not here."""
        return missing(self.files)

    @classmethod
    def load(cls, root: Path) -> WebAssets:
        """Read every file under C{root} (hidden and Python files excepted)."""
        files = {}
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if (
                not path.is_file()
                or any(part.startswith((".", "_")) for part in relative.split("/"))
                or path.suffix not in _CONTENT_TYPES
            ):
                continue
            body = path.read_bytes()
            etag = b'"%s"' % hashlib.sha256(body).hexdigest()[:20].encode("ascii")
            files[relative] = _Asset(body, _CONTENT_TYPES[path.suffix], etag)
        return cls(files, str(root))

    @classmethod
    def empty(cls) -> WebAssets:
        return cls({})


@implementer(IPushProducer)
class _Subscriber:
    """One open C{/api/events} response; skips events while its client lags."""

    def __init__(self, request: IRequest) -> None:
        self.request = request
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class _EventStream:
    """
    Sends one snapshot to every subscriber C{rate} times a second, while
    there are subscribers.  The snapshot is made once per tick, whatever
    the number of subscribers.
    """

    log = Logger()

    def __init__(
        self, snapshot: Callable[[], dict[str, Any]], clock: IReactorTime, rate: float
    ) -> None:
        self._snapshot = snapshot
        self._interval = 1.0 / rate
        self._subscribers: list[_Subscriber] = []
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, subscriber: _Subscriber) -> None:
        self._subscribers.append(subscriber)
        subscriber.request.registerProducer(subscriber, True)  # type: ignore[attr-defined]
        retry = int(max(1.0, self._interval * 2) * 1000)
        subscriber.request.write(b"retry: %d\n\n" % retry)
        subscriber.request.write(self._event())
        if not self._loop.running:
            self._loop.start(self._interval, now=False)

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
        if not self._subscribers and self._loop.running:
            self._loop.stop()

    def _event(self) -> bytes:
        self._sequence += 1
        data = json.dumps(self._snapshot(), separators=(",", ":"))
        return b"id: %d\nevent: stats\ndata: %s\n\n" % (
            self._sequence,
            data.encode("utf-8"),
        )

    def _tick(self) -> None:
        try:
            event = self._event()
            for subscriber in list(self._subscribers):
                if not subscriber.paused:
                    subscriber.request.write(event)
        except Exception:
            # A LoopingCall stops for good after an error: never let it.
            self.log.failure("sending stats events failed")


class _Secure(Resource):
    """Adds the security headers to every answer of the wrapped resource."""

    isLeaf = True

    def __init__(self, wrapped: IResource) -> None:
        super().__init__()
        self._wrapped = wrapped

    def render(self, request: IRequest) -> Any:
        for name, value in _SECURITY_HEADERS:
            request.setHeader(name, value)
        return self._wrapped.render(request)


def _json(request: IRequest, value: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _int_arg(request: IRequest, name: bytes, default: int, top: int) -> int:
    values = request.args.get(name)
    if not values:
        return default
    try:
        return max(0, min(top, int(values[0])))
    except ValueError:
        return default


@attrs.define
class StatsApp:
    """
    The HTTP API, dashboard and admin actions over one registry.

    @ivar admin_token: the bearer token admin actions need, or L{None} to
        turn them off.
    @ivar events_rate: Server-Sent Events per second on C{/api/events}.
    """

    registry: Registry
    clock: IReactorTime
    stats: Stats = attrs.field()
    metrics: Metrics = attrs.field()
    assets: WebAssets = attrs.field(factory=WebAssets.empty)
    # Kept out of repr: the app is every event's log_source, and an observer
    # that shows the source would print the token.
    admin_token: bytes | None = attrs.field(default=None, repr=False)
    events_rate: float = 2.0
    _events: _EventStream = attrs.field(init=False)
    app = Klein()
    log = Logger()

    @stats.default
    def _default_stats(self) -> Stats:
        return Stats(self.registry, self.clock)

    @metrics.default
    def _default_metrics(self) -> Metrics:
        return Metrics(self.registry)

    def __attrs_post_init__(self) -> None:
        self._events = _EventStream(self.stats.snapshot, self.clock, self.events_rate)

    def observe(self, backend: Backend, status: int, seconds: float) -> None:
        """The proxy's per-request hook: feeds the stats and the metrics."""
        self.stats.observe(backend, status, seconds)
        self.metrics.observe(backend, status, seconds)

    def track(self, backend: Backend) -> None:
        """Stats and metrics for a backend added by a reload."""
        self.stats.track(backend)
        self.metrics.track(backend)

    def forget(self, backend: Backend) -> None:
        """Drop the stats and metrics of a backend removed by a reload."""
        self.stats.forget(backend)
        self.metrics.forget(backend)

    def resource(self) -> IResource:
        """The twisted.web resource serving this app."""
        return _Secure(self.app.resource())

    # --- read-only API ------------------------------------------------------------

    @app.route("/api/server-stats", methods=["GET", "HEAD"])
    def server_stats(self, request: IRequest) -> bytes:
        """The registry's and the rolling windows' snapshot as JSON."""
        return _json(request, self.stats.snapshot())

    @app.route("/api/history", methods=["GET", "HEAD"])
    def history(self, request: IRequest) -> bytes:
        """Once-a-second samples of the last C{seconds} (default: all)."""
        seconds = _int_arg(request, b"seconds", HISTORY_POINTS, HISTORY_POINTS)
        return _json(request, self.stats.history(seconds))

    @app.route("/api/decisions", methods=["GET", "HEAD"])
    def decisions(self, request: IRequest) -> bytes:
        """The latest balancing decisions, newest first, explained."""
        limit = _int_arg(request, b"limit", 100, DECISION_SIZE)
        registry = self.registry
        return _json(
            request,
            {
                "time": self.clock.seconds(),
                "algorithm": registry.algorithm,
                "picks": registry.picks,
                "sampled_per_second_max": DECISION_RATE,
                "decisions": registry.decisions.describe(limit),
            },
        )

    @app.route("/api/events", methods=["GET"])
    def events(self, request: IRequest) -> Deferred[None]:
        """The snapshot as Server-Sent Events until the client leaves."""
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        subscriber = _Subscriber(request)
        self._events.subscribe(subscriber)
        return Deferred(lambda _: self._events.unsubscribe(subscriber))

    @app.route("/metrics", methods=["GET", "HEAD"])
    def prometheus(self, request: IRequest) -> bytes:
        """Prometheus (or, if asked, OpenMetrics) exposition."""
        accept = request.getHeader(b"accept")
        body, content_type = self.metrics.exposition(
            accept.decode("latin-1") if accept else None
        )
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body

    # --- admin --------------------------------------------------------------------

    @app.route("/api/admin", methods=["GET", "HEAD"])
    def admin(self, request: IRequest) -> bytes:
        """Whether admin actions are configured (no token needed to ask)."""
        return _json(request, {"enabled": self.admin_token is not None})

    @app.route("/api/backends/<name>/drain", methods=["POST"])
    def drain(self, request: IRequest, name: str) -> bytes:
        """Admin: no new requests to the backend; those in flight finish."""
        return self._act(
            request,
            name,
            lambda b, who: self.registry.set_draining(b, True, f"drained by {who}"),
        )

    @app.route("/api/backends/<name>/enable", methods=["POST"])
    def enable(self, request: IRequest, name: str) -> bytes:
        """Admin: undo a drain."""
        return self._act(
            request,
            name,
            lambda b, who: self.registry.set_draining(b, False, f"enabled by {who}"),
        )

    @app.route("/api/backends/<name>/weight", methods=["POST", "PUT"])
    def weight(self, request: IRequest, name: str) -> bytes:
        """Admin: set the backend's weight from a JSON body C{{"weight": W}}."""
        denied = self._deny(request)
        if denied is not None:
            return denied
        body = request.content.read(_MAX_BODY + 1)
        try:
            value = json.loads(body)["weight"] if len(body) <= _MAX_BODY else None
        except (ValueError, TypeError, KeyError):
            value = None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= MAX_WEIGHT
        ):
            return _json(
                request,
                {
                    "error": 'expected a JSON body {"weight": W} with W above 0'
                    f" and at most {MAX_WEIGHT:g}"
                },
                400,
            )
        return self._act(
            request,
            name,
            lambda b, who: self.registry.set_weight(b, float(value), f"set by {who}"),
            checked=True,
        )

    def _deny(self, request: IRequest) -> bytes | None:
        """An error answer unless the request carries the admin token."""
        token = self.admin_token
        if token is None:
            return _json(
                request,
                {"error": "admin actions are off: set admin_token_file in [txlb]"},
                403,
            )
        header = request.getHeader(b"authorization")
        match = _BEARER.fullmatch(header.strip()) if header else None
        if match is None:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="txlb"')
            return _json(
                request,
                {"error": "an Authorization: Bearer <admin token> header is needed"},
                401,
            )
        if not hmac.compare_digest(match.group(1), token):
            return _json(request, {"error": "wrong admin token"}, 403)
        return None

    def _act(
        self,
        request: IRequest,
        name: str,
        action: Callable[[Backend, str], None],
        checked: bool = False,
    ) -> bytes:
        if not checked:
            denied = self._deny(request)
            if denied is not None:
                return denied
        try:
            backend = self.registry.get(name)
        except KeyError:
            return _json(request, {"error": f"no backend is named {name!r}"}, 404)
        client = request.getClientAddress()
        who = f"admin from {getattr(client, 'host', 'unknown')}"
        action(backend, who)
        self.log.info(
            "admin {action} on backend {backend} by {who}",
            action=request.path.decode("latin-1").rsplit("/", 1)[-1],
            backend=name,
            who=who,
        )
        entry = next(
            b for b in self.stats.snapshot()["backends"] if b["name"] == backend.name
        )
        return _json(request, entry)

    # --- dashboard ----------------------------------------------------------------

    @app.route("/", methods=["GET", "HEAD"])
    @app.route("/dashboard", methods=["GET", "HEAD"])
    def to_dashboard(self, request: IRequest) -> bytes:
        """Send the browser to the dashboard (relative, so a path prefix works)."""
        request.setResponseCode(302)
        # Relative to both "/" and "/dashboard" this is "/dashboard/".
        request.setHeader(b"Location", b"dashboard/")
        return b""

    @app.route("/dashboard/", methods=["GET", "HEAD"])
    @app.route("/dashboard/<path:asset>", methods=["GET", "HEAD"])
    def dashboard(self, request: IRequest, asset: str = "index.html") -> bytes:
        """
        A dashboard file, from memory; instead of index.html, a page naming
        the files missing, if any.
        """
        absent = self.assets.missing
        if asset == "index.html" and absent:
            request.setResponseCode(503)
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            request.setHeader(b"Cache-Control", b"no-store")
            return unavailable_page(absent, self.assets.root)
        found = self.assets.files.get(asset)
        if found is None:
            missing = "index.html" if asset == "index.html" else asset
            return _json(request, {"error": f"no dashboard file {missing!r}"}, 404)
        request.setHeader(b"ETag", found.etag)
        request.setHeader(b"Cache-Control", b"no-cache")
        if request.getHeader(b"if-none-match") == found.etag:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"Content-Type", found.content_type.encode("ascii"))
        return found.body

    @app.handle_errors(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        """Routing errors (404, 405) as JSON."""
        error = failure.value
        assert isinstance(error, HTTPException)
        for header, value in error.get_response().headers:
            if header.lower() == "allow":
                request.setHeader(b"Allow", value.encode("latin-1"))
        return _json(request, {"error": error.description}, error.code or 500)
