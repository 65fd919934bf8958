"""Tests for L{txlb.config}: the keys of p2c, hash, sticky and [ratelimit]."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txlb.config import ConfigError, parse
from txlb.requestkey import RequestKey

BACKEND = "[backend:a]\naddress = 127.0.0.1:9001\n"
TCP = "mode = tcp\nstats_listen = tcp:9000\n"


def txlb(text: str, more: str = "") -> str:
    return f"[txlb]\n{text}\n{more}\n{BACKEND}"


class AffinityConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Off by default; hash keys by client_ip with a bound of 1.25."""
        config = parse(BACKEND)
        self.assertEqual(config.balancing.hash_key, RequestKey("client_ip"))
        self.assertEqual(config.balancing.hash_balance_factor, 1.25)
        self.assertIsNone(config.affinity.sticky)
        self.assertEqual(config.affinity.sticky_max_age, 0.0)
        self.assertFalse(config.ratelimit.enabled)

    def test_values(self) -> None:
        """Each key as written."""
        config = parse(
            txlb(
                "algorithm = hash\nhash_key = header:X-User\n"
                "hash_balance_factor = 1.5\nsticky = cookie:SRV\nsticky_max_age = 10m",
                "[ratelimit]\nrate = 2.5\nburst = 10\nkey = header:X-Api-Key",
            )
        )
        self.assertEqual(config.balancing.algorithm, "hash")
        self.assertEqual(config.balancing.hash_key, RequestKey("header", b"x-user"))
        self.assertEqual(str(config.balancing.hash_key), "header:x-user")
        self.assertEqual(config.balancing.hash_balance_factor, 1.5)
        self.assertEqual(config.affinity.sticky, RequestKey("cookie", b"SRV"))
        self.assertEqual(config.affinity.sticky_max_age, 600.0)
        limit = config.ratelimit
        self.assertEqual((limit.rate, limit.burst, limit.bucket), (2.5, 10, 10))
        self.assertEqual(limit.key, RequestKey("header", b"x-api-key"))
        for key in ("client_ip", "uri", "cookie:sid", "query:id"):
            parse(txlb(f"algorithm = hash\nhash_key = {key}"))
        self.assertEqual(parse(txlb("algorithm = p2c")).balancing.algorithm, "p2c")
        self.assertEqual(
            parse(txlb("hash_balance_factor = 0")).balancing.hash_balance_factor, 0
        )

    def test_bad_values(self) -> None:
        """A bad value is a one-line error: section, key and what is allowed."""
        cases = {
            txlb("algorithm = maglev"): "[txlb] algorithm: 'maglev' is not valid;"
            " expected one of least_conn, round_robin, least_time, p2c, hash",
            txlb("hash_key = header:"): "[txlb] hash_key: 'header:' is not valid;"
            " expected one of client_ip, header:NAME, cookie:NAME, uri, query:NAME",
            txlb("hash_key = header:X User"): "[txlb] hash_key:",
            txlb("hash_key = path"): "[txlb] hash_key: 'path' is not valid",
            txlb("hash_balance_factor = 0.5"): "[txlb] hash_balance_factor: '0.5' is"
            " not valid; expected 0 (no bound) or a number from 1 to 100",
            txlb("sticky = header:X"): "[txlb] sticky: 'header:X' is not valid;"
            " expected empty (off) or cookie:NAME",
            txlb("sticky = cookie:a;b"): "[txlb] sticky:",
            txlb("sticky_max_age = soon"): "[txlb] sticky_max_age: 'soon' is not valid",
            txlb("", "[ratelimit]\nburst = 3"): "[ratelimit] rate: missing; expected"
            " requests a second per client",
            txlb("", "[ratelimit]\nrate = 0"): "[ratelimit] rate: '0' is not valid",
            txlb("", "[ratelimit]\nrate = 1\nburst = 0"): "[ratelimit] burst: '0' is"
            " not valid; expected a whole number, 1 or more",
            txlb("", "[ratelimit]\nrate = 1\nkey = cookie:x"): "[ratelimit] key:"
            " 'cookie:x' is not valid; expected one of client_ip, header:NAME",
            txlb("", "[ratelimit]\nrate = 1\nwindow = 2"): "[ratelimit] window:"
            " unknown key; allowed: rate, burst, key",
        }
        for text, message in cases.items():
            with self.assertRaises(ConfigError) as caught:
                parse(text, "lb.ini")
            line = str(caught.exception)
            self.assertIn(message, line)
            self.assertTrue(line.startswith("lb.ini: ["), line)
            self.assertNotIn("\n", line)

    def test_tcp_mode(self) -> None:
        """TCP mode hashes client_ip only and has no cookie nor 429."""
        self.assertEqual(
            parse(txlb(TCP + "algorithm = hash")).balancing.hash_key.kind, "client_ip"
        )
        cases = {
            txlb(TCP + "algorithm = hash\nhash_key = header:X-User"): "lb.ini: [txlb]"
            " hash_key: header:x-user needs mode = http (tcp mode hashes client_ip"
            " only)",
            txlb(TCP + "sticky = cookie:S"): "lb.ini: [txlb] sticky: needs mode = http",
            txlb(
                TCP, "[ratelimit]\nrate = 5"
            ): "lb.ini: [ratelimit]: needs mode = http",
        }
        for text, message in cases.items():
            with self.assertRaises(ConfigError) as caught:
                parse(text, "lb.ini")
            self.assertIn(message, str(caught.exception))
