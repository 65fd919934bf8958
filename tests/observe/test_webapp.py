"""
Contract tests for L{txlb.webapp}: every endpoint through C{StubTreq}, on a
L{task.Clock}, including the admin actions' authentication failures, the
security headers and the dashboard files' safety rules.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from treq import collect
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed

from txlb.config import ConfigError, parse
from txlb.core.registry import Registry
from txlb.observe.admin import AdminTokenError, read_admin_token
from txlb.observe.assets import WebAssets, find_web_root
from txlb.observe.webapp import CSP, StatsApp

CONFIG = """
[backend:web1]
address = 127.0.0.1:9001
[backend:web2]
address = 127.0.0.1:9002
weight = 2
"""
TOKEN = b"s3cret-token-0123456789abcdef"
BASE = "http://txlb.test"


class _Case(SynchronousTestCase):
    """A stats app over a two-backend registry, served by StubTreq."""

    admin_token: bytes | None = TOKEN
    assets = WebAssets(
        {
            "index.html": WebAssets.load(find_web_root()).files["index.html"],
        }
    )

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = Registry.from_config(parse(CONFIG), self.clock)
        self.app = StatsApp(
            self.registry,
            self.clock,
            assets=self.assets,
            admin_token=self.admin_token,
            events_rate=2.0,
        )
        self.client = StubTreq(self.app.resource())

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[Any, bytes]:
        response = self.successResultOf(
            self.client.request(method, BASE + path, **kwargs)
        )
        body = self.successResultOf(response.content())
        return response, body

    def get_json(self, path: str, code: int = 200) -> Any:
        response, body = self.request("GET", path)
        self.assertEqual(response.code, code, body)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/json"]
        )
        self.assertEqual(
            response.headers.getRawHeaders(b"cache-control"), [b"no-store"]
        )
        return json.loads(body)

    def post(
        self, path: str, authorization: bytes | None = None, body: Any = None
    ) -> tuple[int, Any, Any]:
        headers = {}
        if authorization is not None:
            headers[b"Authorization"] = [authorization]
        data = json.dumps(body).encode() if body is not None else b""
        response, raw = self.request("POST", path, headers=headers, data=data)
        return response.code, json.loads(raw), response


class ServerStatsTests(_Case):
    def test_snapshot(self) -> None:
        """
        /api/server-stats answers the documented schema: time, algorithm,
        totals and per backend name, address, health, state, counters,
        weight, rps and latency percentiles.
        """
        web1 = self.registry.backends[0]
        lease = self.registry.acquire()
        assert lease is not None
        self.clock.advance(0.5)
        self.app.observe(web1, 200, 0.004)
        stats = self.get_json("/api/server-stats")
        self.assertEqual(stats["time"], 1000.5)
        self.assertEqual(stats["algorithm"], "least_conn")
        self.assertEqual(
            stats["backends"][0],
            {
                "name": "web1",
                "address": "127.0.0.1:9001",
                "source": "static",
                "priority": 0,
                "healthy": True,
                "state": "healthy",
                "draining": False,
                "active_connections": 1,
                "total_requests": 1,
                "failures": 0,
                "weight": 1.0,
                "configured_weight": 1.0,
                "ejections": 0,
                "consecutive_failures": 0,
                "max_connections": 0,
                "rps": 1.0,
                "error_rate": 0.0,
                "share": 1.0,
                "latency_ms": {"p50": 4.0, "p95": 4.0, "p99": 4.0},
                "history": [
                    {
                        "time": 1000.0,
                        "healthy": True,
                        "state": "healthy",
                        "reason": "configured",
                    }
                ],
            },
        )
        self.assertEqual(stats["backends"][1]["name"], "web2")
        self.assertEqual(
            stats["backends"][1]["latency_ms"], {"p50": None, "p95": None, "p99": None}
        )
        totals = stats["totals"]
        self.assertEqual(totals["backends"], 2)
        self.assertEqual(totals["healthy"], 2)
        self.assertEqual(totals["active_connections"], 1)
        self.assertEqual(totals["total_requests"], 1)
        self.assertEqual(totals["rps"], 1.0)
        self.assertEqual(
            [totals[k] for k in ("queued", "queue_size", "queued_total")], [0, 1024, 0]
        )
        self.assertEqual(totals["queue_timeouts"], 0)
        self.assertEqual(totals["queue_full_rejections"], 0)

    def test_observe_feeds_metrics_too(self) -> None:
        """The proxy's hook feeds both the rolling stats and /metrics."""
        web2 = self.registry.backends[1]
        self.app.observe(web2, 502, 0.1)
        _response, body = self.request("GET", "/metrics")
        self.assertIn(
            b'txlb_http_requests_total{backend="web2",status_class="5xx"} 1.0', body
        )

    def test_head(self) -> None:
        """HEAD answers like GET, without a body."""
        response, body = self.request("HEAD", "/api/server-stats")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")


class ReadinessTests(_Case):
    def healthz(self, method: str = "GET") -> tuple[int, bytes]:
        response, body = self.request(method, "/healthz")
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"),
            [b"text/plain; charset=utf-8"],
        )
        self.assertEqual(
            response.headers.getRawHeaders(b"cache-control"), [b"no-store"]
        )
        return response.code, body

    def test_ready(self) -> None:
        """200 with a backend in rotation; HEAD too, without a body."""
        self.assertEqual(self.healthz(), (200, b"ready: 2 of 2 backends available\n"))
        self.assertEqual(self.healthz("HEAD"), (200, b""))

    def test_no_backend(self) -> None:
        """503 when no backend is in rotation (down or drained), and says so."""
        web1, web2 = self.registry.backends
        self.registry.set_healthy(web1, False, "probe failed")
        self.assertEqual(self.healthz()[0], 200)
        self.registry.set_draining(web2, True, "admin")
        self.assertEqual(
            self.healthz(), (503, b"not ready: no backend available (0 of 2)\n")
        )

    def test_draining(self) -> None:
        """503 from the moment the balancer drains, read through its callable."""
        draining = [False]
        self.app.draining = lambda: draining[0]
        self.assertEqual(self.healthz()[0], 200)
        draining[0] = True
        self.assertEqual(self.healthz(), (503, b"draining: shutting down\n"))


class ReadOnlyEndpointTests(_Case):
    def test_history(self) -> None:
        """/api/history returns the sampled points, limited by ?seconds=."""
        for _ in range(5):
            self.clock.advance(1)
            self.app.stats.sample()
        history = self.get_json("/api/history")
        self.assertEqual(history["backends"], ["web1", "web2"])
        self.assertEqual(len(history["points"]), 5)
        self.assertEqual(len(self.get_json("/api/history?seconds=2")["points"]), 3)
        self.assertEqual(len(self.get_json("/api/history?seconds=x")["points"]), 5)

    def test_decisions(self) -> None:
        """/api/decisions explains the latest picks, newest first."""
        for _ in range(3):
            self.clock.advance(1)
            self.registry.acquire()
        data = self.get_json("/api/decisions?limit=2")
        self.assertEqual(data["algorithm"], "least_conn")
        self.assertEqual(data["picks"], 3)
        self.assertEqual([d["pick"] for d in data["decisions"]], [3, 2])
        first = data["decisions"][0]
        self.assertEqual(
            set(first),
            {
                "time",
                "pick",
                "algorithm",
                "winner",
                "reason",
                "tie",
                "candidates",
                "candidates_total",
                "excluded",
            },
        )
        self.assertEqual(
            set(first["candidates"][0]),
            {
                "name",
                "active",
                "weight",
                "load",
                "latency_ms",
                "vtime",
                "winner",
                "tied",
            },
        )

    def test_metrics(self) -> None:
        """/metrics is Prometheus text, with the registry's gauges."""
        response, body = self.request("GET", "/metrics")
        self.assertEqual(response.code, 200)
        (content_type,) = response.headers.getRawHeaders(b"content-type")
        self.assertTrue(content_type.startswith(b"text/plain; version="))
        self.assertIn(b'txlb_backend_up{backend="web1"} 1.0', body)

    def test_admin_status(self) -> None:
        """/api/admin says whether admin actions are on."""
        self.assertEqual(self.get_json("/api/admin"), {"enabled": True})

    def test_unknown_api_path(self) -> None:
        """An unknown /api/ path is a JSON 404."""
        response, body = self.request("GET", "/api/nope")
        self.assertEqual(response.code, 404)
        self.assertIn("error", json.loads(body))

    def test_wrong_method(self) -> None:
        """A GET on an admin action is 405 with an Allow header."""
        response, _body = self.request("GET", "/api/backends/web1/drain")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"POST"])


class EventsTests(_Case):
    def _subscribe(self) -> tuple[Any, list[bytes]]:
        chunks: list[bytes] = []
        response = self.successResultOf(self.client.get(BASE + "/api/events"))
        self.collecting = collect(response, chunks.append)
        self.client.flush()
        return response, chunks

    @staticmethod
    def _events(chunks: list[bytes]) -> list[dict[str, Any]]:
        text = b"".join(chunks).decode("utf-8")
        return [
            json.loads(line[len("data: ") :])
            for line in text.splitlines()
            if line.startswith("data: ")
        ]

    def test_stream(self) -> None:
        """
        /api/events is text/event-stream: a retry hint and a snapshot at
        once, then one snapshot every 1/events_rate seconds.
        """
        response, chunks = self._subscribe()
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"),
            [b"text/event-stream; charset=utf-8"],
        )
        self.assertEqual(
            response.headers.getRawHeaders(b"cache-control"), [b"no-store"]
        )
        text = b"".join(chunks)
        self.assertTrue(text.startswith(b"retry: 1000\n\nid: 1\nevent: stats\ndata: {"))
        self.assertEqual(len(self._events(chunks)), 1)
        self.clock.advance(0.5)
        self.client.flush()
        self.clock.advance(0.5)
        self.client.flush()
        events = self._events(chunks)
        self.assertEqual([e["time"] for e in events], [1000.0, 1000.5, 1001.0])
        self.assertEqual(events[0]["backends"][0]["name"], "web1")

    def test_snapshot_made_once_per_tick(self) -> None:
        """Several subscribers share one snapshot per tick."""
        self._subscribe()
        self._subscribe()
        calls: list[float] = []
        snapshot = self.app.stats.snapshot

        def counting() -> dict[str, Any]:
            calls.append(self.clock.seconds())
            return snapshot()

        self.app._events._snapshot = counting
        self.clock.advance(0.5)
        self.assertEqual(calls, [1000.5])

    def test_stops_when_client_leaves(self) -> None:
        """
        When the client disconnects, it is unsubscribed and, with nobody
        left, the timer stops.
        """
        _response, _chunks = self._subscribe()
        self.assertEqual(len(self.app._events), 1)
        (subscriber,) = self.app._events._subscribers
        subscriber.request.channel.transport.loseConnection()
        self.client.flush()
        self.failureResultOf(self.collecting, ResponseFailed)
        self.assertEqual(len(self.app._events), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lagging_client_skips_events(self) -> None:
        """A subscriber whose transport pushes back misses ticks, not memory."""
        self._subscribe()
        (subscriber,) = self.app._events._subscribers
        writes: list[bytes] = []
        subscriber.request.write = writes.append  # type: ignore[method-assign]
        subscriber.pauseProducing()
        self.clock.advance(0.5)
        self.assertEqual(writes, [])
        subscriber.resumeProducing()
        self.clock.advance(0.5)
        self.assertEqual(len(writes), 1)


class AdminTests(_Case):
    def test_no_header(self) -> None:
        """Without an Authorization header: 401 and a Bearer challenge."""
        code, _body, response = self.post("/api/backends/web1/drain")
        self.assertEqual(code, 401)
        self.assertEqual(
            response.headers.getRawHeaders(b"www-authenticate"),
            [b'Bearer realm="txlb"'],
        )
        self.assertFalse(self.registry.get("web1").draining)

    def test_malformed_header(self) -> None:
        """A header that is not "Bearer <token>" is 401."""
        for header in (b"Basic dXNlcjpwYXNz", b"Bearer", b"Bearer a b", TOKEN):
            code, _body, _ = self.post("/api/backends/web1/drain", header)
            self.assertEqual(code, 401, header)
        self.assertFalse(self.registry.get("web1").draining)

    def test_wrong_token(self) -> None:
        """A well-formed but wrong token is 403."""
        for token in (b"nope", TOKEN + b"x", TOKEN[:-1]):
            code, body, _ = self.post("/api/backends/web1/drain", b"Bearer " + token)
            self.assertEqual((code, body), (403, {"error": "wrong admin token"}))
        self.assertFalse(self.registry.get("web1").draining)

    def test_drain_and_enable(self) -> None:
        """
        With the token, drain takes the backend out of rotation (new requests
        go elsewhere) and enable brings it back; both are in its history.
        """
        code, body, _ = self.post("/api/backends/web1/drain", b"Bearer " + TOKEN)
        self.assertEqual(code, 200)
        self.assertEqual((body["name"], body["state"]), ("web1", "draining"))
        for _ in range(5):
            self.clock.advance(1)
            lease = self.registry.acquire()
            assert lease is not None
            self.assertEqual(lease.backend.name, "web2")
            lease.release()
        stats = self.get_json("/api/server-stats")
        self.assertEqual(stats["backends"][0]["state"], "draining")
        self.assertTrue(
            stats["backends"][0]["history"][-1]["reason"].startswith("drained by admin")
        )
        code, body, _ = self.post("/api/backends/web1/enable", b"bearer " + TOKEN)
        self.assertEqual((code, body["state"]), (200, "healthy"))

    def test_weight(self) -> None:
        """A JSON body sets the weight."""
        code, body, _ = self.post(
            "/api/backends/web2/weight", b"Bearer " + TOKEN, {"weight": 5}
        )
        self.assertEqual((code, body["weight"]), (200, 5.0))
        self.assertEqual(self.registry.get("web2").weight, 5.0)

    def test_bad_weight(self) -> None:
        """A missing, non-numeric or out-of-range weight is 400."""
        for value in ({"weight": 0}, {"weight": 1001}, {"weight": "3"}, {}, [], None):
            code, _, _ = self.post(
                "/api/backends/web2/weight", b"Bearer " + TOKEN, value
            )
            self.assertEqual(code, 400, value)
        code, _body, _ = self.post(
            "/api/backends/web2/weight", b"Bearer " + TOKEN, {"weight": True}
        )
        self.assertEqual(code, 400)
        self.assertEqual(self.registry.get("web2").weight, 2.0)

    def test_weight_needs_token_first(self) -> None:
        """Auth is checked before the body: no token, no 400."""
        code, _, _ = self.post("/api/backends/web2/weight", None, {"weight": 0})
        self.assertEqual(code, 401)

    def test_unknown_backend(self) -> None:
        """An authorised action on an unknown backend is 404."""
        code, body, _ = self.post("/api/backends/nope/drain", b"Bearer " + TOKEN)
        self.assertEqual(code, 404)
        self.assertIn("nope", body["error"])


class AdminOffTests(_Case):
    admin_token = None

    def test_off(self) -> None:
        """Without admin_token_file every admin action is 403, token or not."""
        self.assertEqual(self.get_json("/api/admin"), {"enabled": False})
        for header in (None, b"Bearer " + TOKEN):
            code, body, _ = self.post("/api/backends/web1/drain", header)
            self.assertEqual(code, 403)
            self.assertIn("admin_token_file", body["error"])
        self.assertFalse(self.registry.get("web1").draining)


class DashboardTests(_Case):
    assets = WebAssets.load(find_web_root())

    def test_security_headers_everywhere(self) -> None:
        """
        Every answer, API, dashboard or error, forbids inline script and
        framing.
        """
        for path in ("/dashboard/", "/api/server-stats", "/metrics", "/api/nope"):
            response, _ = self.request("GET", path)
            headers = response.headers
            self.assertEqual(
                headers.getRawHeaders(b"content-security-policy"), [CSP.encode()]
            )
            self.assertEqual(
                headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"]
            )
            self.assertEqual(headers.getRawHeaders(b"x-frame-options"), [b"DENY"])
        self.assertIn("script-src 'self'", CSP)
        self.assertNotIn("unsafe-inline", CSP)
        self.assertNotIn("unsafe-eval", CSP)

    def test_index(self) -> None:
        """/dashboard/ is the dashboard's HTML, revalidated by ETag."""
        response, body = self.request("GET", "/dashboard/")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"),
            [b"text/html; charset=utf-8"],
        )
        self.assertIn(b"<title>txlb dashboard</title>", body)
        (etag,) = response.headers.getRawHeaders(b"etag")
        again, body = self.request(
            "GET", "/dashboard/", headers={b"If-None-Match": [etag]}
        )
        self.assertEqual((again.code, body), (304, b""))

    def test_redirects(self) -> None:
        """/dashboard and / (on a stats-only port) lead to /dashboard/."""
        for path in ("/dashboard", "/"):
            response = self.successResultOf(
                self.client.get(BASE + path, allow_redirects=False)
            )
            self.assertEqual(response.code, 302)
            self.assertEqual(
                response.headers.getRawHeaders(b"location"), [b"dashboard/"]
            )

    def test_files(self) -> None:
        """The script and style are served with their types; others are 404."""
        for name, kind in (
            ("app.js", b"text/javascript; charset=utf-8"),
            ("style.css", b"text/css; charset=utf-8"),
            ("icon.svg", b"image/svg+xml"),
        ):
            response, _body = self.request("GET", "/dashboard/" + name)
            self.assertEqual(response.code, 200, name)
            self.assertEqual(response.headers.getRawHeaders(b"content-type"), [kind])
        for missing in ("nope.js", "../txlb/webapp.py", "%2e%2e/setup.cfg"):
            response, _ = self.request("GET", "/dashboard/" + missing)
            self.assertEqual(response.code, 404, missing)

    def unavailable(self, assets: WebAssets) -> tuple[int, str, StubTreq]:
        app = StatsApp(self.registry, self.clock, assets=assets)
        client = StubTreq(app.resource())
        response = self.successResultOf(client.get(BASE + "/dashboard/"))
        body = self.successResultOf(response.text("utf-8"))
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"),
            [b"text/html; charset=utf-8"],
        )
        self.assertEqual(
            response.headers.getRawHeaders(b"content-security-policy"),
            [CSP.encode()],
        )
        return response.code, body, client

    def test_missing_dashboard(self) -> None:
        """
        Without its files /dashboard/ is a page (503) saying which are
        missing and how to get them; the API still works.
        """
        code, body, client = self.unavailable(WebAssets({}, "/opt/txlb/web"))
        self.assertEqual(code, 503)
        self.assertIn("dashboard is unavailable", body)
        self.assertIn("<code>/opt/txlb/web</code>", body)
        for name in ("index.html", "app.js", "style.css", "vendor/chart.umd.js"):
            self.assertIn(f"<code>{name}</code>", body)
        self.assertIn("make web-vendor", body)
        self.assertNotIn("<script", body)
        response = self.successResultOf(client.get(BASE + "/api/server-stats"))
        self.assertEqual(response.code, 200)

    def test_missing_chart_js(self) -> None:
        """
        With index.html but no vendor/chart.umd.js (a checkout installed
        without npm), /dashboard/ says so instead of serving a page whose
        script would fail in the browser.
        """
        files = {
            k: v for k, v in self.assets.files.items() if k != "vendor/chart.umd.js"
        }
        code, body, client = self.unavailable(WebAssets(files, "/x/web"))
        self.assertEqual(code, 503)
        self.assertIn(
            "Missing from <code>/x/web</code>: <code>vendor/chart.umd.js</code>.", body
        )
        self.assertNotIn("<code>app.js</code>", body)
        response = self.successResultOf(client.get(BASE + "/dashboard/app.js"))
        self.assertEqual(response.code, 200)

    def test_found_assets(self) -> None:
        """WebAssets.find reads the complete files and says where from."""
        found = WebAssets.find()
        self.assertEqual(found.missing, ())
        self.assertEqual(Path(found.root), find_web_root())
        self.assertEqual(found.files.keys(), self.assets.files.keys())


class SafeByConstructionTests(SynchronousTestCase):
    """The dashboard's own files follow the rules the CSP enforces."""

    root = find_web_root()

    def test_no_inline_script_or_style(self) -> None:
        """
        index.html has no inline script, event handler attribute, style
        attribute or element, and loads nothing from another origin.
        """
        html = (self.root / "index.html").read_text("utf-8")
        for script in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.DOTALL):
            self.assertEqual(script.strip(), "")
        for tag in re.findall(r"<script\b[^>]*>", html):
            self.assertRegex(tag, r'src="(?!https?:|//)[^"]+"')
        self.assertNotRegex(html, r"\son[a-z]+\s*=")
        self.assertNotRegex(html, r"\sstyle\s*=")
        self.assertNotIn("<style", html)
        self.assertNotRegex(html, r"(src|href)=\"(https?:)?//")

    def test_data_rendered_as_text(self) -> None:
        """app.js and fleet.js never parse strings as HTML or code."""
        script = "".join(
            (self.root / name).read_text("utf-8") for name in ("app.js", "fleet.js")
        )
        for risky in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "createContextualFragment",
        ):
            self.assertNotIn(risky, script)

    def test_no_cdn(self) -> None:
        """Nothing is fetched from another origin."""
        for name in ("index.html", "app.js", "fleet.js", "style.css"):
            text = (self.root / name).read_text("utf-8")
            self.assertNotRegex(text, r"(src|href|url)\s*[=(]\s*[\"']?(https?:)?//")


class AdminTokenFileTests(SynchronousTestCase):
    def _file(self, text: str) -> str:
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        path = directory / "token"
        path.write_text(text, "utf-8")
        return str(path)

    def test_read(self) -> None:
        """The token is the file's content without surrounding whitespace."""
        self.assertEqual(read_admin_token(self._file(TOKEN.decode() + "\n")), TOKEN)

    def test_too_short_or_odd(self) -> None:
        """Short tokens and characters outside RFC 6750's set are refused."""
        for text in (
            "short",
            "",
            "spaces in the token here",
            "ümlaut-token-0123456789",
        ):
            self.assertRaises(AdminTokenError, read_admin_token, self._file(text))

    def test_unreadable(self) -> None:
        """A missing file names the path and the reason."""
        error = self.assertRaises(AdminTokenError, read_admin_token, "/nonexistent/t")
        self.assertIn("/nonexistent/t", str(error))


class ConfigKeyTests(SynchronousTestCase):
    def test_events_rate(self) -> None:
        """events_rate defaults to 2 per second and accepts (0, 20]."""
        self.assertEqual(parse(CONFIG).observe.events_rate, 2.0)
        self.assertEqual(
            parse("[txlb]\nevents_rate = 5\n" + CONFIG).observe.events_rate, 5.0
        )
        for bad in ("0", "21", "fast"):
            self.assertRaises(
                ConfigError, parse, f"[txlb]\nevents_rate = {bad}\n" + CONFIG
            )

    def test_admin_token_file(self) -> None:
        """admin_token_file defaults to empty (admin off)."""
        self.assertEqual(parse(CONFIG).observe.admin_token_file, "")
        config = parse("[txlb]\nadmin_token_file = /etc/txlb/token\n" + CONFIG)
        self.assertEqual(config.observe.admin_token_file, "/etc/txlb/token")
