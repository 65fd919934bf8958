"""
The stats app: a Klein app bound to one registry, serving the JSON API,
Server-Sent Events, Prometheus metrics, the dashboard and the admin
actions.

Routes (all answers carry a C{Content-Security-Policy} that forbids inline
script, and the API answers C{Cache-Control: no-store}):

  - C{GET /healthz}: readiness, for an L4 tier or an orchestrator: 200
    while txlb accepts and has a backend in rotation, 503 while it drains
    (SIGTERM) or has none; a short text says which.
  - C{GET /api/server-stats}: L{txlb.observe.stats.Stats.snapshot} as JSON.
  - C{GET /api/events}: the same snapshot as Server-Sent Events
    (C{event: stats}), C{events_rate} times a second.
  - C{GET /api/history?seconds=N}: once-a-second samples for the charts.
  - C{GET /api/decisions?limit=N}: the latest balancing decisions, explained.
  - C{GET /api/admin}: whether admin actions are on.
  - C{POST /api/backends/NAME/drain}, C{.../enable}, C{.../weight} (JSON body
    C{{"weight": 2}}), C{POST /api/backends} (a JSON object of lb.ini's
    backend keys and C{name}: add one), C{DELETE /api/backends/NAME} (take
    out one the admin added): admin actions (L{txlb.observe.admin}), with
    C{Authorization: Bearer TOKEN}.
  - C{GET /metrics}: Prometheus exposition.
  - C{GET /dashboard/}: the dashboard (files of C{web/}, loaded at start).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException

from txlb.config import Config
from txlb.core.backend import Backend
from txlb.core.decisions import RATE as DECISION_RATE
from txlb.core.decisions import SIZE as DECISION_SIZE
from txlb.core.registry import Registry
from txlb.observe.admin import Admin
from txlb.observe.assets import WebAssets
from txlb.observe.events import EventStream, Subscriber
from txlb.observe.guesses import WrongTokens
from txlb.observe.jsonout import int_arg, json_answer
from txlb.observe.metrics import Metrics
from txlb.observe.stats import HISTORY_POINTS, Stats
from txlb.observe.webfiles import unavailable_page

__all__ = ["CSP", "StatsApp"]

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


@attrs.define
class StatsApp:
    """
    The HTTP API, dashboard and admin actions over one registry.

    @ivar admin_token: the bearer token admin actions need, or L{None} to
        turn them off.
    @ivar events_rate: Server-Sent Events per second on C{/api/events}.
    @ivar draining: whether the balancer is shutting down (the lifecycle's).
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
    # Where the decisions are when worker processes make them (workers = N).
    decisions_source: Callable[[int], Deferred[list[dict[str, Any]]]] | None = None
    # The running configuration: backends added through the admin API are
    # checked against it, as lb.ini's are.
    config: Config | None = attrs.field(default=None, repr=False)
    # Whether the balancer is shutting down (the lifecycle's), for /healthz.
    draining: Callable[[], bool] = lambda: False
    _events: EventStream = attrs.field(init=False)
    _admin: Admin = attrs.field(init=False)
    app = Klein()
    log = Logger()

    @stats.default
    def _default_stats(self) -> Stats:
        return Stats(self.registry, self.clock)

    @metrics.default
    def _default_metrics(self) -> Metrics:
        return Metrics(self.registry)

    def __attrs_post_init__(self) -> None:
        self._events = EventStream(self.stats.snapshot, self.clock, self.events_rate)
        self._admin = Admin(
            self.registry,
            self.stats.entry,
            self.admin_token,
            wrong_tokens=WrongTokens(self.clock),
        )
        if self.config is not None:
            self._admin.config = self.config

    def observe(self, backend: Backend, status: int, seconds: float) -> None:
        """The proxy's per-request hook: feeds the stats and the metrics."""
        self.stats.observe(backend, status, seconds)
        self.metrics.observe(backend, status, seconds)

    def resource(self) -> IResource:
        """The twisted.web resource serving this app."""
        return _Secure(self.app.resource())

    # --- read-only API ------------------------------------------------------------

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        """Ready (200) or not (503), and why, in a few words."""
        registry = self.registry
        available, total = registry.available, len(registry.backends)
        if self.draining():
            code, text = 503, "draining: shutting down"
        elif not available:
            code, text = 503, f"not ready: no backend available (0 of {total})"
        else:
            code, text = 200, f"ready: {available} of {total} backends available"
        body = text.encode("utf-8") + b"\n"
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.setHeader(b"Cache-Control", b"no-store")
        return body

    @app.route("/api/server-stats", methods=["GET", "HEAD"])
    def server_stats(self, request: IRequest) -> bytes:
        """The registry's and the rolling windows' snapshot as JSON."""
        return json_answer(request, self.stats.snapshot())

    @app.route("/api/history", methods=["GET", "HEAD"])
    def history(self, request: IRequest) -> bytes:
        """Once-a-second samples of the last C{seconds} (default: all)."""
        seconds = int_arg(request, b"seconds", HISTORY_POINTS, HISTORY_POINTS)
        return json_answer(request, self.stats.history(seconds))

    @app.route("/api/decisions", methods=["GET", "HEAD"])
    def decisions(self, request: IRequest) -> bytes | Deferred[bytes]:
        """The latest balancing decisions, newest first, explained."""
        limit = int_arg(request, b"limit", 100, DECISION_SIZE)
        registry = self.registry

        def answer(decisions: list[dict[str, Any]]) -> bytes:
            return json_answer(
                request,
                {
                    "time": self.clock.seconds(),
                    "algorithm": registry.algorithm,
                    "picks": registry.picks,
                    "sampled_per_second_max": DECISION_RATE,
                    "decisions": decisions,
                    **registry.decisions.extras(),
                },
            )

        source = self.decisions_source
        if source is not None:
            return source(limit).addCallback(answer)
        return answer(registry.decisions.describe(limit))

    @app.route("/api/events", methods=["GET"])
    def events(self, request: IRequest) -> Deferred[None]:
        """The snapshot as Server-Sent Events until the client leaves."""
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        subscriber = Subscriber(request)
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

    # --- admin (txlb.observe.admin) -------------------------------------------------

    @app.route("/api/admin", methods=["GET", "HEAD"])
    def admin(self, request: IRequest) -> bytes:
        """Whether admin actions are configured (no token needed to ask)."""
        return json_answer(request, {"enabled": self._admin.enabled})

    @app.route("/api/backends", methods=["POST"])
    def add_backend(self, request: IRequest) -> bytes:
        return self._admin.add(request)

    @app.route("/api/backends/<name>", methods=["DELETE"])
    def delete_backend(self, request: IRequest, name: str) -> bytes:
        return self._admin.delete(request, name)

    @app.route("/api/backends/<name>/drain", methods=["POST"])
    def drain(self, request: IRequest, name: str) -> bytes:
        return self._admin.drain(request, name)

    @app.route("/api/backends/<name>/enable", methods=["POST"])
    def enable(self, request: IRequest, name: str) -> bytes:
        return self._admin.enable(request, name)

    @app.route("/api/backends/<name>/weight", methods=["POST", "PUT"])
    def weight(self, request: IRequest, name: str) -> bytes:
        return self._admin.weight(request, name)

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
            return json_answer(
                request, {"error": f"no dashboard file {missing!r}"}, 404
            )
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
        return json_answer(request, {"error": error.description}, error.code or 500)
