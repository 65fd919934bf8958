"""
Tests for L{txlb.observe.features}: the hash ring's key shares, the sticky
cookie's and the rate limit's counts in C{/api/server-stats},
C{/api/decisions} and C{/metrics}, through C{StubTreq}.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from tests.http.test_sticky import Trips, cookie_of, request
from tests.support import Harness
from txlb.observe import features
from txlb.observe.webapp import StatsApp

BASE = "http://txlb.test"
ALL = "algorithm = hash\nhash_key = header:X-User\nsticky = cookie:SRV\n"
LIMIT = "\n[ratelimit]\nrate = 1\nburst = 1\nkey = header:X-User\n"


class FeaturesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness(backends=3, extra=ALL + LIMIT)
        self.app = StatsApp(self.h.registry, self.h.reactor)
        proxy = self.h.proxy
        features.show(self.app, self.h.registry, proxy.sticky, proxy.limiter)  # type: ignore[union-attr]
        self.stub = StubTreq(self.app.resource())
        trips = Trips(self.h)
        client = self.h.client()
        _, response = trips.send(client, request(b"X-User: a"))
        trips.send(client, request(b"X-User: b", b"Cookie: " + cookie_of(response)))
        client.transport.clear()
        client.send(request(b"X-User: a"))  # over the limit: 429

    def get(self, path: str) -> bytes:
        response = self.successResultOf(self.stub.get(BASE + path))
        self.assertEqual(response.code, 200)
        body: bytes = self.successResultOf(response.content())
        return body

    def test_server_stats(self) -> None:
        """Each backend's key share (summing to 1), and a section per part."""
        stats: dict[str, Any] = json.loads(self.get("/api/server-stats"))
        shares = [b["key_share"] for b in stats["backends"]]
        self.assertAlmostEqual(sum(shares), 1.0, places=3)
        self.assertTrue(all(0.2 < s < 0.45 for s in shares), shares)
        self.assertEqual(stats["hash"]["key"], "header:x-user")
        self.assertEqual(stats["hash"]["ring_points"], 3 * 160)
        self.assertEqual(
            {k: stats["sticky"][k] for k in ("hits", "misses", "set_cookies")},
            {"hits": 1, "misses": 1, "set_cookies": 1},
        )
        self.assertEqual(stats["sticky"]["miss_reasons"], {"no cookie": 1})
        limit = stats["ratelimit"]
        self.assertEqual((limit["allowed"], limit["limited"]), (2, 1))
        self.assertEqual(limit["clients_tracked"], 2)
        self.assertEqual(limit["clients_limited_recently"], 1)

    def test_decisions(self) -> None:
        """/api/decisions carries the same sections beside the decisions."""
        data = json.loads(self.get("/api/decisions"))
        self.assertEqual(data["algorithm"], "hash")
        self.assertEqual(data["sticky"]["hits"], 1)
        self.assertEqual(data["ratelimit"]["limited"], 1)
        self.assertEqual(data["hash"]["balance_factor"], 1.25)

    def test_metrics(self) -> None:
        """The parts' counters are Prometheus series."""
        text = self.get("/metrics").decode()
        for line in (
            "txlb_sticky_hits_total 1.0",
            'txlb_sticky_misses_total{reason="no cookie"} 1.0',
            "txlb_sticky_cookies_set_total 1.0",
            "txlb_ratelimit_allowed_total 2.0",
            "txlb_ratelimit_limited_total 1.0",
            "txlb_ratelimit_clients 2.0",
        ):
            self.assertIn(line + "\n", text)
        shares = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("txlb_backend_key_share{")
        ]
        self.assertEqual(len(shares), 3)
        self.assertAlmostEqual(sum(shares), 1.0, places=6)

    def test_nothing_added_when_off(self) -> None:
        """Without them the views have none of their sections or series."""
        h = Harness(backends=2)
        app = StatsApp(h.registry, h.reactor)
        features.show(app, h.registry, None, None)
        stub = StubTreq(app.resource())
        stats = json.loads(
            self.successResultOf(
                self.successResultOf(stub.get(BASE + "/api/server-stats")).content()
            )
        )
        self.assertFalse({"hash", "sticky", "ratelimit"} & set(stats))
        self.assertNotIn("key_share", stats["backends"][0])
        text = self.successResultOf(
            self.successResultOf(stub.get(BASE + "/metrics")).content()
        )
        self.assertNotIn(b"txlb_sticky", text)
        self.assertNotIn(b"txlb_ratelimit", text)
        self.assertNotIn(b"key_share", text)


class DashboardFileTests(SynchronousTestCase):
    def test_affinity_panel_is_text_only_and_loaded(self) -> None:
        """affinity.js is loaded by index.html, never parses strings as HTML
        or code, and fetches nothing from another origin."""
        from txlb.observe.assets import find_web_root

        root = find_web_root()
        self.assertIn(
            '<script src="affinity.js" defer></script>',
            (root / "index.html").read_text(),
        )
        script = (root / "affinity.js").read_text("utf-8")
        for risky in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            self.assertNotIn(risky, script)
        self.assertNotRegex(script, r"(src|href|url)\s*[=(]\s*[\"']?(https?:)?//")
        self.assertIn('addEventListener("txlb:snapshot"', script)
        self.assertIn('new CustomEvent("txlb:snapshot"', (root / "app.js").read_text())
