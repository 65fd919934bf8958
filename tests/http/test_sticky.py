"""
Tests for L{txlb.http.sticky} and L{txlb.http.affinity}: sticky sessions and
hash keys through the real front end, exchange and registry on a memory
reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Backend, Client, Harness, config
from txlb.http.sticky import cookie_value
from txlb.lifecycle.reload import Reloader

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
STICKY = "sticky = cookie:SRV\n"


def request(*headers: bytes, path: bytes = b"/") -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return b"GET " + path + b" HTTP/1.1\r\nHost: h\r\n" + lines + b"\r\n"


class Trips:
    """Sends requests through a harness; whichever backend got one answers."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.conns: dict[int, Backend] = {}
        self.sent: dict[str, bytes] = {}

    def send(self, client: Client, data: bytes, reply: bytes = OK) -> tuple[str, bytes]:
        """One request and its answer: the backend's name and the response."""
        h = self.h
        client.transport.clear()
        client.send(data)
        if h.reactor.tcpClients:
            port = h.connects()[0][1]
            self.conns[port] = h.accept()
        conn = next(c for c in self.conns.values() if c.received())
        self.last_sent = conn.received()
        conn.transport.clear()
        conn.reply(reply)
        name = h.records[-1]["backend"]
        return name, client.received()


def set_cookie(response: bytes) -> bytes | None:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"set-cookie:"):
            return line.split(b":", 1)[1].strip()
    return None


def cookie_of(response: bytes) -> bytes:
    found = set_cookie(response)
    assert found is not None, response
    return found.split(b";", 1)[0]


class StickyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness(backends=3, extra=STICKY)
        self.trips = Trips(self.h)
        self.client = self.h.client()

    def test_first_response_sets_an_opaque_cookie(self) -> None:
        """The first response sticks the client with an opaque, HttpOnly,
        SameSite=Lax cookie for the whole site; no address in it."""
        name, response = self.trips.send(self.client, request())
        header = set_cookie(response)
        assert header is not None
        value = cookie_of(response).split(b"=", 1)[1]
        backend = self.h.registry.get(name)
        self.assertEqual(value, cookie_value(name, backend.address))
        self.assertEqual(len(value), 16)
        self.assertNotIn(b"127.0.0.1", header)
        self.assertNotIn(b"900", header)
        self.assertEqual(
            header.split(b"; ")[1:], [b"Path=/", b"HttpOnly", b"SameSite=Lax"]
        )

    def test_stuck_client_stays_and_backend_never_sees_the_cookie(self) -> None:
        """Later requests with the cookie go to its backend, whatever the
        load; txlb's cookie is taken out, the client's others pass."""
        first, response = self.trips.send(self.client, request())
        cookie = cookie_of(response)
        for _ in range(12):
            name, response = self.trips.send(
                self.client, request(b"Cookie: theme=dark; " + cookie + b"; lang=fr")
            )
            self.assertEqual(name, first)
            self.assertIsNone(set_cookie(response))
            self.assertIn(b"\r\nCookie: theme=dark; lang=fr\r\n", self.trips.last_sent)
            self.assertNotIn(b"SRV", self.trips.last_sent)
        snapshot = self.h.proxy.sticky.snapshot()  # type: ignore[union-attr]
        self.assertEqual((snapshot["hits"], snapshot["misses"]), (12, 1))

    def test_only_cookie_header_is_dropped(self) -> None:
        """A Cookie header that held only txlb's cookie is not sent at all."""
        _, response = self.trips.send(self.client, request())
        self.trips.send(self.client, request(b"Cookie: " + cookie_of(response)))
        self.assertNotIn(b"cookie:", self.trips.last_sent.lower())

    def test_forged_cookie_is_ignored(self) -> None:
        """A cookie that names no backend is a miss, never an error: the
        request is balanced and the client stuck anew."""
        for forged in (b"SRV=0123456789abcdef", b"SRV=", b"SRV=../../etc", b"SRV"):
            name, response = self.trips.send(self.client, request(b"Cookie: " + forged))
            self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response)
            self.assertEqual(
                cookie_of(response).split(b"=", 1)[1],
                cookie_value(name, self.h.registry.get(name).address),
            )
        reasons = self.h.proxy.sticky.reasons  # type: ignore[union-attr]
        self.assertEqual(reasons["unknown cookie"], 3)
        self.assertEqual(reasons["no cookie"], 1)

    def test_falls_back_when_its_backend_drains(self) -> None:
        """A client stuck to a draining backend is balanced again and stuck
        to its new backend; it stays there."""
        first, response = self.trips.send(self.client, request())
        cookie = cookie_of(response)
        registry = self.h.registry
        registry.set_draining(registry.get(first), True, "test")
        second, response = self.trips.send(self.client, request(b"Cookie: " + cookie))
        self.assertNotEqual(second, first)
        cookie = cookie_of(response)
        for _ in range(3):
            name, _ = self.trips.send(self.client, request(b"Cookie: " + cookie))
            self.assertEqual(name, second)
        self.assertEqual(self.h.proxy.sticky.reasons["out of rotation"], 1)  # type: ignore[union-attr]

    def test_full_backend_is_a_miss(self) -> None:
        """A client stuck to a backend at its max_connections is balanced again."""
        h = Harness(backends=2, extra=STICKY, backend_extra="max_connections = 1")
        trips = Trips(h)
        client = h.client()
        first, response = trips.send(client, request())
        cookie = cookie_of(response)
        h.registry.get(first).others = 1  # another worker's request holds it
        second, response = trips.send(client, request(b"Cookie: " + cookie))
        self.assertNotEqual(second, first)
        self.assertIsNotNone(set_cookie(response))
        self.assertEqual(h.proxy.sticky.reasons["full"], 1)  # type: ignore[union-attr]

    def test_retry_elsewhere_restucks(self) -> None:
        """When the stuck backend cannot be reached, the retry's backend answers
        and the response sticks the client to it."""
        first, response = self.trips.send(self.client, request())
        cookie = cookie_of(response)
        h = self.h
        # The pooled connection is gone; the next connect is refused.
        port = h.registry.get(first).address.port
        self.trips.conns.pop(port).close()
        self.client.transport.clear()
        self.client.send(request(b"Cookie: " + cookie))
        self.assertEqual(h.connects()[0][1], h.registry.get(first).address.port)
        h.refuse()
        conn = h.accept()
        conn.reply(OK)
        response = self.client.received()
        retried = h.records[-1]["backend"]
        self.assertNotEqual(retried, first)
        new = cookie_of(response).split(b"=", 1)[1]
        self.assertEqual(new, cookie_value(retried, h.registry.get(retried).address))

    def test_secure_and_max_age(self) -> None:
        """Secure when a trusted proxy says the client came over HTTPS;
        Max-Age from sticky_max_age."""
        h = Harness(
            backends=2,
            extra=STICKY + "sticky_max_age = 60m\ntrusted_proxies = 192.0.2.0/24\n",
        )
        trips = Trips(h)
        client = h.client()
        _, response = trips.send(client, request(b"X-Forwarded-Proto: https"))
        header = set_cookie(response)
        assert header is not None
        self.assertEqual(
            header.split(b"; ")[1:],
            [b"Path=/", b"HttpOnly", b"SameSite=Lax", b"Max-Age=3600", b"Secure"],
        )
        # Without the header, over plain HTTP: no Secure.
        h.registry.set_draining(h.registry.get(h.records[-1]["backend"]), True, "x")
        _, response = trips.send(client, request())
        self.assertNotIn(b"Secure", set_cookie(response) or b"")

    def test_untrusted_proto_is_not_believed(self) -> None:
        """From an untrusted peer X-Forwarded-Proto: https earns no Secure."""
        _, response = self.trips.send(self.client, request(b"X-Forwarded-Proto: https"))
        self.assertNotIn(b"Secure", set_cookie(response) or b"")

    def test_survives_a_reload_and_a_restart(self) -> None:
        """After a reload (a backend added) the cookie still names its
        backend; a new process computes the same value."""
        first, response = self.trips.send(self.client, request())
        cookie = cookie_of(response)
        reloaded = config(4, STICKY)
        Reloader(self.h.config, self.h.registry).apply(reloaded)
        self.assertEqual(len(self.h.registry.backends), 4)
        for _ in range(4):
            name, response = self.trips.send(self.client, request(b"Cookie: " + cookie))
            self.assertEqual(name, first)
            self.assertIsNone(set_cookie(response))
        restarted = Harness(backends=3, extra=STICKY)
        trips = Trips(restarted)
        name, _ = trips.send(restarted.client(), request(b"Cookie: " + cookie))
        self.assertEqual(name, first)

    def test_decisions_say_hit_and_miss(self) -> None:
        """The decision log says a sticky hit and, for a miss, why."""
        clock = self.h.reactor
        _, response = self.trips.send(self.client, request())
        cookie = cookie_of(response)
        clock.advance(1)
        self.trips.send(self.client, request(b"Cookie: " + cookie))
        decisions = self.h.registry.decisions.describe(2)
        hit, miss = decisions
        self.assertEqual(hit["detail"], {"sticky": "hit", "cookie": "SRV"})
        self.assertIn("sticky session: the client's cookie SRV names", hit["reason"])
        self.assertEqual(miss["detail"]["sticky"], "miss")
        self.assertIn(
            "(sticky miss: no cookie; the response sets the cookie)", miss["reason"]
        )


class HashKeyTests(SynchronousTestCase):
    def harness(self, extra: str) -> tuple[Harness, Trips]:
        h = Harness(backends=5, extra="algorithm = hash\n" + extra)
        return h, Trips(h)

    def names(self, h: Harness, trips: Trips, data: list[bytes]) -> list[str]:
        client = h.client()
        return [trips.send(client, d)[0] for d in data]

    def test_header_key(self) -> None:
        """Requests with one X-User go to one backend; users spread."""
        h, trips = self.harness("hash_key = header:X-User\n")
        users = [b"X-User: u%d" % (i % 40) for i in range(120)]
        names = self.names(h, trips, [request(u) for u in users])
        by_user: dict[bytes, set[str]] = {}
        for user, name in zip(users, names, strict=True):
            by_user.setdefault(user, set()).add(name)
        self.assertEqual({len(s) for s in by_user.values()}, {1})
        self.assertGreaterEqual(len(set(names)), 4)

    def test_query_cookie_and_uri_keys(self) -> None:
        """query:NAME, cookie:NAME and uri each keep their requests together."""
        for extra, make in (
            ("hash_key = query:id\n", lambda i: request(path=b"/x?a=1&id=%d" % i)),
            ("hash_key = cookie:sid\n", lambda i: request(b"Cookie: a=b; sid=%d" % i)),
            ("hash_key = uri\n", lambda i: request(path=b"/item/%d" % i)),
        ):
            h, trips = self.harness(extra)
            data = [make(i % 10) for i in range(40)]
            names = self.names(h, trips, data)
            for i in range(10):
                self.assertEqual(len(set(names[i::10])), 1, (extra, names))

    def test_client_ip_behind_a_trusted_proxy(self) -> None:
        """client_ip is the address a trusted proxy names, not the proxy's."""
        h, trips = self.harness("trusted_proxies = 192.0.2.7\n")
        ips = [b"X-Forwarded-For: 198.51.100.%d" % (i % 30) for i in range(90)]
        names = self.names(h, trips, [request(ip) for ip in ips])
        self.assertGreaterEqual(len(set(names)), 3)
        for i in range(30):
            self.assertEqual(len(set(names[i::30])), 1)
        policy: Any = h.registry.policy
        h.reactor.advance(1)
        self.names(h, trips, [request(b"X-Forwarded-For: 203.0.113.5")])
        decision = h.registry.decisions.describe(1)[0]
        self.assertEqual(decision["detail"]["key"], "203.0.113.5")
        self.assertEqual(policy.key_name, "client_ip")

    def test_missing_key_is_least_connections(self) -> None:
        """A request without the header is balanced by least connections."""
        h, trips = self.harness("hash_key = header:X-User\n")
        names = self.names(h, trips, [request() for _ in range(10)])
        self.assertEqual(len(set(names)), 5)
        h.reactor.advance(1)
        self.names(h, trips, [request()])
        decision = h.registry.decisions.describe(1)[0]
        self.assertIn(
            "no header:x-user in the request: least connections", decision["reason"]
        )

    def test_hash_and_sticky_together(self) -> None:
        """With both, the cookie wins while its backend is available."""
        h, trips = self.harness("hash_key = header:X-User\n" + STICKY)
        client = h.client()
        first, response = trips.send(client, request(b"X-User: a"))
        cookie = cookie_of(response)
        for user in (b"b", b"c", b"d", b"e", b"f"):
            name, _ = trips.send(
                client, request(b"X-User: " + user, b"Cookie: " + cookie)
            )
            self.assertEqual(name, first)
