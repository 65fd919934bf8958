"""
Tests for L{txlb.http.limit}, the rate limit's place in L{txlb.http.routing},
and the key readers of L{txlb.http.keys}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.http.test_sticky import Trips, request
from tests.support import Harness
from txlb.http.headers import TrustedProxies
from txlb.http.keys import client_ip, cookie, key_reader, query_parameter
from txlb.http.request import ClientRequest
from txlb.requestkey import RequestKey
from txlb.schema import networks


def limited(extra: str = "", backends: int = 2) -> Harness:
    return Harness(
        backends=backends, extra=extra + "\n[ratelimit]\nrate = 1\nburst = 2\n"
    )


class RateLimitTests(SynchronousTestCase):
    def test_over_the_limit_429_and_nothing_reaches_a_backend(self) -> None:
        """Past its burst a client gets 429 with Retry-After; no backend
        connection is opened and no backend receives a byte of it."""
        h = limited()
        trips = Trips(h)
        client = h.client()
        for _ in range(2):
            _, response = trips.send(client, request())
            self.assertTrue(response.startswith(b"HTTP/1.1 200"), response)
        received = [c.received() for c in trips.conns.values()]
        client.transport.clear()
        client.send(request())
        response = client.received()
        self.assertTrue(response.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"))
        self.assertIn(b"\r\nRetry-After: 1\r\n", response)
        self.assertTrue(response.endswith(b"too many requests\n"))
        self.assertEqual(h.pending_connects(), [])
        self.assertEqual([c.received() for c in trips.conns.values()], received)
        self.assertEqual(h.active(), [0, 0])
        self.assertEqual(sum(b.total_requests for b in h.registry.backends), 2)
        # The connection stays open and usable: a token comes after 1 s.
        self.assertFalse(client.transport.disconnecting)
        h.reactor.advance(1)
        _, response = trips.send(client, request())
        self.assertTrue(response.startswith(b"HTTP/1.1 200"), response)
        limiter = h.proxy.limiter  # type: ignore[union-attr]
        self.assertEqual((limiter.allowed, limiter.limited), (3, 1))

    def test_retry_after_rounds_up(self) -> None:
        """Retry-After is the wait for a token, rounded up to whole seconds."""
        h = Harness(backends=1, extra="\n[ratelimit]\nrate = 0.25\nburst = 1\n")
        trips = Trips(h)
        client = h.client()
        trips.send(client, request())
        h.reactor.advance(0.5)
        client.transport.clear()
        client.send(request())
        self.assertIn(b"\r\nRetry-After: 4\r\n", client.received())

    def test_body_of_a_refused_request_is_dropped(self) -> None:
        """A refused POST's body is read and dropped; the next request is parsed."""
        h = Harness(backends=1, extra="\n[ratelimit]\nrate = 1\nburst = 1\n")
        trips = Trips(h)
        client = h.client()
        trips.send(client, request())
        client.transport.clear()
        client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello")
        self.assertEqual(client.received(), b"")
        client.send(b"world")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 429"))
        h.reactor.advance(1)
        _, response = trips.send(client, request())
        self.assertTrue(response.startswith(b"HTTP/1.1 200"))
        self.assertNotIn(b"hello", trips.last_sent)

    def test_stats_paths_are_not_limited(self) -> None:
        """The stats app's paths on the proxy's port are never limited."""
        h = Harness(backends=1, extra="\n[ratelimit]\nrate = 1\nburst = 1\n")
        client = h.client()
        for _ in range(5):
            client.transport.clear()
            client.send(b"GET /api/server-stats HTTP/1.1\r\nHost: h\r\n\r\n")
            self.assertFalse(client.received().startswith(b"HTTP/1.1 429"))
        self.assertEqual(h.proxy.limiter.limited, 0)  # type: ignore[union-attr]

    def test_header_key_and_its_absence(self) -> None:
        """key = header:X-Api-Key: each key its own bucket; a request without
        the header is counted by its client's address."""
        h = Harness(
            backends=1,
            extra="\n[ratelimit]\nrate = 1\nburst = 1\nkey = header:X-Api-Key\n",
        )
        trips = Trips(h)
        client = h.client()
        for name in (b"a", b"b", b"c"):
            _, response = trips.send(client, request(b"X-Api-Key: " + name))
            self.assertTrue(response.startswith(b"HTTP/1.1 200"))
        client.transport.clear()
        client.send(request(b"X-Api-Key: a"))
        self.assertTrue(client.received().startswith(b"HTTP/1.1 429"))
        _, response = trips.send(client, request())
        self.assertTrue(response.startswith(b"HTTP/1.1 200"))
        client.transport.clear()
        client.send(request())
        self.assertTrue(client.received().startswith(b"HTTP/1.1 429"))
        store = h.proxy.limiter.store  # type: ignore[union-attr]
        self.assertEqual(len(store), 4)

    def test_without_ratelimit_nothing_is_counted(self) -> None:
        """No [ratelimit]: the plain router, no limiter."""
        h = Harness(backends=1)
        self.assertIsNone(h.proxy.limiter)  # type: ignore[union-attr]
        self.assertEqual(type(h.factory.handle).__name__, "Router")
        trips = Trips(h)
        client = h.client()
        for _ in range(10):
            _, response = trips.send(client, request())
            self.assertTrue(response.startswith(b"HTTP/1.1 200"))


class FakeChannel:
    def __init__(self, peer: str) -> None:
        self.peer = peer


def make(
    *headers: tuple[bytes, bytes], peer: str = "192.0.2.1", uri: bytes = b"/"
) -> ClientRequest:
    request = ClientRequest(FakeChannel(peer))  # type: ignore[arg-type]
    request.headers = list(headers)
    request.uri = uri
    return request


class KeyReaderTests(SynchronousTestCase):
    def test_client_ip(self) -> None:
        """The peer, or behind a trusted proxy the client it names."""
        trusted = TrustedProxies(networks("10.0.0.0/8"))
        xff = (b"X-Forwarded-For", b"203.0.113.9, 10.1.1.1")
        self.assertEqual(client_ip(make(xff), trusted), b"192.0.2.1")
        self.assertEqual(client_ip(make(xff, peer="10.0.0.2"), trusted), b"203.0.113.9")
        self.assertEqual(client_ip(make(xff, peer="10.0.0.2"), None), b"10.0.0.2")
        self.assertEqual(client_ip(make(peer="10.0.0.2"), trusted), b"10.0.0.2")

    def test_cookie(self) -> None:
        """A cookie's first value across Cookie headers; quotes dropped."""
        r = make((b"Cookie", b"a=1; sid=xyz"), (b"cookie", b'sid=second; b="q"'))
        self.assertEqual(cookie(r, b"sid"), b"xyz")
        self.assertEqual(cookie(r, b"b"), b"q")
        self.assertIsNone(cookie(r, b"SID"))
        self.assertIsNone(cookie(make((b"Cookie", b"sid=")), b"sid"))

    def test_query_parameter(self) -> None:
        """A query parameter's first value, as sent."""
        self.assertEqual(query_parameter(b"/p?a=1&id=%20x&id=2", b"id"), b"%20x")
        self.assertIsNone(query_parameter(b"/p?a=1", b"id"))
        self.assertIsNone(query_parameter(b"/p", b"id"))
        self.assertIsNone(query_parameter(b"/p?id=", b"id"))

    def test_readers(self) -> None:
        """Each kind of key reads its part of the request; absent is None."""
        r = make((b"X-User", b"alice"), (b"Cookie", b"s=1"), uri=b"/a?q=2")
        cases = {
            RequestKey("client_ip"): b"192.0.2.1",
            RequestKey("header", b"x-user"): b"alice",
            RequestKey("header", b"x-other"): None,
            RequestKey("cookie", b"s"): b"1",
            RequestKey("query", b"q"): b"2",
            RequestKey("uri"): b"/a?q=2",
        }
        for key, expected in cases.items():
            self.assertEqual(key_reader(key, None)(r), expected, key)
        self.assertIsNone(
            key_reader(RequestKey("header", b"x-user"), None)(make((b"X-User", b"")))
        )
