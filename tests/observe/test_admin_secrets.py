"""
The admin token stays secret (issue 8, item 7): L{txlb.observe.admin} compares it
in constant time, and neither the token nor the C{Authorization} header a
client sent appears in a log event or in any read-only view
(C{/api/server-stats}, C{/api/history}, C{/api/decisions}, C{/metrics},
C{/api/admin}).  The real process's logs and access log are checked by
C{tests/integration/test_admin_secrets.py}.
"""

from __future__ import annotations

import hmac
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogPublisher, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import provider

from txlb.config import parse
from txlb.core.registry import Registry
from txlb.observe import admin
from txlb.observe.webapp import StatsApp

CONFIG = """
[backend:web1]
address = 127.0.0.1:9001
[backend:web2]
address = 127.0.0.1:9002
"""
TOKEN = b"Adm1n-T0ken-zz9yy8xx7ww6vv5uu4"
WRONG = b"Wr0ng-T0ken-aa1bb2cc3dd4ee5ff6"
BASE = "http://txlb.test"
VIEWS = (
    "/api/server-stats",
    "/api/history",
    "/api/decisions",
    "/metrics",
    "/api/admin",
)


class AdminSecretTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = Registry.from_config(parse(CONFIG), self.clock)
        self.app = StatsApp(self.registry, self.clock, admin_token=TOKEN)
        self.client = StubTreq(self.app.resource())
        self.events: list[dict[str, Any]] = []

        @provider(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            self.events.append(event)

        publisher: LogPublisher = globalLogPublisher  # type: ignore[assignment]
        publisher.addObserver(observe)
        self.addCleanup(publisher.removeObserver, observe)

    def request(
        self, method: str, path: str, authorization: bytes | None = None, **kw: Any
    ) -> tuple[int, bytes, bytes]:
        """(status, body, every response header as bytes)."""
        headers = {} if authorization is None else {b"Authorization": [authorization]}
        response = self.successResultOf(
            self.client.request(method, BASE + path, headers=headers, **kw)
        )
        body = self.successResultOf(response.content())
        raw_headers = b"\n".join(
            name + b": " + b", ".join(values)
            for name, values in response.headers.getAllRawHeaders()
        )
        return response.code, body, raw_headers

    def admin_traffic(self) -> list[bytes]:
        """Admin requests with a wrong, a right and a malformed header."""
        seen = []
        for authorization, code in (
            (b"Bearer " + WRONG, 403),
            (b"Bearer " + TOKEN, 200),
            (b"Basic " + TOKEN, 401),
            (TOKEN, 401),
            (b"Bearer " + TOKEN + b" " + WRONG, 401),
        ):
            status, body, headers = self.request(
                "POST", "/api/backends/web1/drain", authorization
            )
            self.assertEqual(status, code, body)
            seen += [body, headers]
        status, body, headers = self.request(
            "POST",
            "/api/backends/web2/weight",
            b"Bearer " + TOKEN,
            json={"weight": 3},
        )
        self.assertEqual(status, 200, body)
        seen += [body, headers]
        status, body, headers = self.request(
            "POST", "/api/backends/nope/enable", b"Bearer " + TOKEN
        )
        self.assertEqual(status, 404, body)
        return [*seen, body, headers]

    def assertSecretsAbsent(self, text: bytes | str, where: str) -> None:
        if isinstance(text, str):
            text = text.encode("utf-8", "replace")
        for secret in (TOKEN, WRONG):
            self.assertNotIn(secret, text, where)
            self.assertNotIn(secret.lower(), text.lower(), where)

    def test_token_compared_in_constant_time(self) -> None:
        """
        The presented token is checked by C{hmac.compare_digest} against
        the configured one, for a wrong token and for the right one.
        """
        calls: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        self.patch(admin.hmac, "compare_digest", spy)
        self.assertEqual(
            self.request("POST", "/api/backends/web1/drain", b"Bearer " + WRONG)[0],
            403,
        )
        self.assertEqual(
            self.request("POST", "/api/backends/web1/drain", b"Bearer " + TOKEN)[0],
            200,
        )
        self.assertEqual(calls, [(WRONG, TOKEN), (TOKEN, TOKEN)])

    def test_not_in_answers(self) -> None:
        """
        No admin answer (body or header), whatever the token presented,
        repeats the token or the Authorization header.
        """
        for i, text in enumerate(self.admin_traffic()):
            self.assertSecretsAbsent(text, f"admin answer {i}")

    def test_not_in_views(self) -> None:
        """
        After admin actions (which are recorded in the backends' history and
        the log), no read-only view holds the token or the wrong one.
        """
        self.admin_traffic()
        self.clock.advance(5)
        for path in VIEWS:
            status, body, headers = self.request("GET", path)
            self.assertEqual(status, 200, path)
            self.assertSecretsAbsent(body + headers, path)
        # The actions did happen, so the views had something to show.
        status, body, _ = self.request("GET", "/api/server-stats")
        self.assertIn(b"set by admin from", body)

    def test_not_in_log_events(self) -> None:
        """
        No log event (its formatted text or any of its fields) holds the
        token or the wrong one, while the admin actions were logged.
        """
        self.admin_traffic()
        self.assertTrue(
            [e for e in self.events if "admin" in (e.get("log_format") or "")],
            "the admin actions were logged",
        )
        for event in self.events:
            self.assertSecretsAbsent(repr(event), "log event fields")
            self.assertSecretsAbsent(formatEvent(event), "formatted log event")
