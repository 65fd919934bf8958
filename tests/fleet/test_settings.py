"""Tests for L{txlb.fleet.settings} and the C{[fleet]} section of lb.ini."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txlb.config import ConfigError, FleetConfig, parse
from txlb.fleet.settings import RedisURL, node_name, redis_url

BACKEND = "[backend:a]\naddress = 10.0.0.1:9000\n"


class RedisURLTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """HOST, HOST:PORT, /DB and a password; printed without the password."""
        self.assertEqual(redis_url("redis://cache"), RedisURL("cache", 6379, 0))
        self.assertEqual(
            redis_url(" redis://10.0.0.5:6380/3 "), RedisURL("10.0.0.5", 6380, 3)
        )
        url = redis_url("redis://:s%40cret@[::1]:7000/1")
        self.assertEqual((url.host, url.port, url.db), ("::1", 7000, 1))
        self.assertEqual(url.password, "s@cret")
        self.assertEqual(str(url), "redis://[::1]:7000/1")
        self.assertNotIn("cret", repr(url))

    def test_refused(self) -> None:
        """Other schemes, no host, a bad port or DB, a user, a query."""
        for text in (
            "rediss://cache:6379/0",
            "http://cache",
            "redis://",
            "redis://cache:99999",
            "redis://cache:x",
            "redis://cache/db1",
            "redis://user:pw@cache",
            "redis://cache/0?timeout=1",
            "cache:6379",
        ):
            with self.subTest(text=text), self.assertRaises(ValueError):
                redis_url(text)


class FleetSectionTests(SynchronousTestCase):
    def test_absent_is_off(self) -> None:
        """Without [fleet] there is no fleet."""
        self.assertEqual(parse(BACKEND).fleet, FleetConfig())
        self.assertIsNone(parse(BACKEND).fleet.redis)

    def test_keys(self) -> None:
        """redis, node and interval; the TTL is 2.5 intervals."""
        fleet = parse(
            "[fleet]\nredis = redis://10.0.0.5/2\nnode = lb-a\ninterval = 250ms\n"
            + BACKEND
        ).fleet
        self.assertEqual(fleet.redis, RedisURL("10.0.0.5", 6379, 2))
        self.assertEqual((fleet.node, fleet.interval, fleet.ttl), ("lb-a", 0.25, 0.625))
        defaults = parse("[fleet]\nredis = redis://r\n" + BACKEND).fleet
        self.assertEqual((defaults.node, defaults.interval), ("", 0.1))

    def test_errors_are_one_line(self) -> None:
        """Each mistake names file, section, key and what is allowed."""
        cases = {
            "[fleet]\nnode = a\n": "lb.ini: [fleet] redis: missing; expected redis://",
            "[fleet]\nredis = rediss://r\n": "[fleet] redis: 'rediss://r' is not valid",
            "[fleet]\nredis = redis://r\ninterval = 5ms\n": (
                "[fleet] interval: '5ms' is not valid; expected a duration from 10ms"
            ),
            "[fleet]\nredis = redis://r\ninterval = 11s\n": "[fleet] interval:",
            "[fleet]\nredis = redis://r\nnode = a/b\n": (
                "[fleet] node: 'a/b' is not valid; expected this balancer's name"
            ),
            "[fleet]\nredis = redis://r\nttl = 1s\n": (
                "[fleet] ttl: unknown key; allowed: redis, node, interval"
            ),
            "[fleets]\n": "[fleets]: unknown section; allowed: [txlb], [health],"
            " [outlier], [ratelimit], [fleet], [backend:NAME], [discovery:NAME]",
        }
        for text, message in cases.items():
            with self.subTest(text=text):
                with self.assertRaises(ConfigError) as e:
                    parse(text + BACKEND)
                self.assertIn(message, str(e.exception))
                self.assertNotIn("\n", str(e.exception))

    def test_with_workers(self) -> None:
        """[fleet] and workers = N go together (the supervisor shares)."""
        config = parse("[txlb]\nworkers = 2\n[fleet]\nredis = redis://r\n" + BACKEND)
        self.assertEqual(config.workers, 2)
        self.assertIsNotNone(config.fleet.redis)

    def test_node_name(self) -> None:
        """The node's name, else the host's, which must be a valid name."""
        self.assertEqual(node_name(FleetConfig(node="lb-a"), lambda: "x"), "lb-a")
        self.assertEqual(node_name(FleetConfig(), lambda: "ip-10-0-1-5"), "ip-10-0-1-5")
        with self.assertRaises(ValueError) as e:
            node_name(FleetConfig(), lambda: "bad host")
        self.assertIn("'bad host' cannot name a node", str(e.exception))
        self.assertIn("set node", str(e.exception))
