"""Tests for L{txlb.observe.guesses}: wrong admin tokens limited per client."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from txlb.config import parse
from txlb.core.registry import Registry
from txlb.http.headers import TrustedProxies
from txlb.observe.guesses import BURST, INTERVAL, WrongTokens, client_of
from txlb.observe.webapp import StatsApp

TOKEN = b"Adm1n-T0ken-zz9yy8xx7ww6vv5uu4"
CONFIG = "[backend:web1]\naddress = 127.0.0.1:9001\n"


class WrongTokensTests(SynchronousTestCase):
    def test_burst_then_one_an_interval(self) -> None:
        clock = Clock()
        clock.advance(50)
        wrong = WrongTokens(clock)
        for _ in range(BURST):
            self.assertEqual(wrong.wait("a"), 0.0)
            wrong.failed("a")
        self.assertAlmostEqual(wrong.wait("a"), INTERVAL)
        self.assertEqual(wrong.wait("b"), 0.0)
        clock.advance(INTERVAL - 1)
        self.assertAlmostEqual(wrong.wait("a"), 1.0)
        clock.advance(1)
        self.assertEqual(wrong.wait("a"), 0.0)
        wrong.failed("a")
        self.assertAlmostEqual(wrong.wait("a"), INTERVAL)
        clock.advance(BURST * INTERVAL)
        self.assertEqual(wrong.wait("a"), 0.0)

    def test_forgets_clients_whose_wait_is_over(self) -> None:
        clock = Clock()
        wrong = WrongTokens(clock)
        for i in range(10_000):
            wrong.failed(f"10.0.{i // 256}.{i % 256}")
        clock.advance(INTERVAL + 1)
        wrong.failed("192.0.2.1")
        self.assertEqual(len(wrong), 1)


class ClientOfTests(SynchronousTestCase):
    def request(self, peer: str, forwarded: bytes | None = None) -> DummyRequest:
        request = DummyRequest([b""])
        request.client = IPv4Address("TCP", peer, 40000)
        if forwarded is not None:
            request.requestHeaders.addRawHeader(b"x-forwarded-for", forwarded)
        return request

    def test_peer_unless_trusted(self) -> None:
        trusted = TrustedProxies([ip_network("127.0.0.1/32")])
        self.assertEqual(
            client_of(self.request("192.0.2.7", b"1.2.3.4"), None), "192.0.2.7"
        )
        self.assertEqual(
            client_of(self.request("192.0.2.7", b"1.2.3.4"), trusted), "192.0.2.7"
        )
        self.assertEqual(
            client_of(self.request("127.0.0.1", b"6.6.6.6, 1.2.3.4"), trusted),
            "1.2.3.4",
        )
        self.assertEqual(client_of(self.request("127.0.0.1"), trusted), "127.0.0.1")


class AdminLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = Registry.from_config(parse(CONFIG), self.clock)
        app = StatsApp(self.registry, self.clock, admin_token=TOKEN)
        self.client = StubTreq(app.resource())

    def drain(self, token: bytes) -> tuple[int, Any]:
        response = self.successResultOf(
            self.client.post(
                "http://txlb.test/api/backends/web1/drain",
                headers={b"Authorization": [b"Bearer " + token]},
            )
        )
        self.successResultOf(response.content())
        return response.code, response.headers.getRawHeaders(b"retry-after")

    def test_past_the_limit_even_the_right_token_waits(self) -> None:
        """Five wrong tokens get 403; then every admin request from that
        client gets 429 with Retry-After, the right token too (so a guess
        learns nothing), and nothing is done; after the wait it works."""
        for _ in range(BURST):
            self.assertEqual(self.drain(b"Wr0ng-T0ken-aa1bb2cc3dd4ee5ff6"), (403, None))
        self.assertEqual(self.drain(TOKEN), (429, [b"10"]))
        self.assertFalse(self.registry.get("web1").draining)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.drain(TOKEN), (200, None))
        self.assertTrue(self.registry.get("web1").draining)

    def test_right_tokens_cost_nothing(self) -> None:
        for _ in range(3 * BURST):
            self.assertEqual(self.drain(TOKEN)[0], 200)
