"""Tests for L{txlb.config}."""

from __future__ import annotations

import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txlb.config import Address, ConfigError, load, parse, parse_duration

GOOD = """
[txlb]
listen = tcp:8080, tcp:8081   ; two listeners
mode = http
algorithm = least_conn
stats_listen =

[health]
path = /healthz
interval = 500ms
timeout = 0.25
rise = 1
fall = 4

[backend:web1]
address = 127.0.0.1:9001
weight = 2

[backend:web2]
address = [::1]:9002
"""


class ParseTests(SynchronousTestCase):
    def test_full_file(self) -> None:
        """Every key of a valid file lands in the config, inline comments cut."""
        config = parse(GOOD, "lb.ini")
        self.assertEqual(config.listen, ("tcp:8080", "tcp:8081"))
        self.assertEqual(config.mode, "http")
        self.assertEqual(config.stats_listen, "")
        self.assertEqual(config.health.path, "/healthz")
        self.assertEqual(config.health.interval, 0.5)
        self.assertEqual(config.health.timeout, 0.25)
        self.assertEqual((config.health.rise, config.health.fall), (1, 4))
        self.assertEqual([b.name for b in config.backends], ["web1", "web2"])
        self.assertEqual(config.backends[0].address, Address("127.0.0.1", 9001))
        self.assertEqual(config.backends[0].weight, 2.0)
        self.assertEqual(config.backends[1].address, Address("::1", 9002))
        self.assertEqual(config.backends[1].weight, 1.0)
        self.assertEqual(str(config.backends[1].address), "[::1]:9002")

    def test_defaults(self) -> None:
        """A file with only a backend gets documented defaults."""
        config = parse("[backend:a]\naddress = localhost:80\n")
        self.assertEqual(config.listen, ("tcp:8080",))
        self.assertEqual(config.balancing.algorithm, "least_conn")
        self.assertEqual(config.proxy.backend_timeout, 30.0)
        self.assertEqual(config.proxy.connect_timeout, 3.0)
        self.assertEqual(config.proxy.retries, 2)
        self.assertEqual(config.health.interval, 2.0)
        self.assertEqual(config.observe.access_log, "")

    def test_durations(self) -> None:
        """Durations accept ms, s, m and plain seconds, and nothing else."""
        self.assertEqual(parse_duration("500ms"), 0.5)
        self.assertEqual(parse_duration("2s"), 2.0)
        self.assertEqual(parse_duration("1m"), 60.0)
        self.assertEqual(parse_duration("1.5"), 1.5)
        for bad in ("", "2x", "-1s", "s", "1 h", "1e3"):
            self.assertRaises(ValueError, parse_duration, bad)


class ErrorTests(SynchronousTestCase):
    def error(self, text: str) -> str:
        with self.assertRaises(ConfigError) as caught:
            parse(text, "my.ini")
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith("my.ini"), message)
        return message

    def test_unknown_section(self) -> None:
        """An unknown section is named, with the sections allowed."""
        message = self.error("[backend:a]\naddress=h:1\n[helth]\npath=/\n")
        self.assertIn("[helth]", message)
        self.assertIn("[backend:NAME]", message)

    def test_unknown_key(self) -> None:
        """An unknown key is named with its section and the keys allowed."""
        message = self.error("[txlb]\nlisten_on = tcp:1\n[backend:a]\naddress=h:1\n")
        self.assertEqual(message.split(":")[0:2], ["my.ini", " [txlb] listen_on"])
        self.assertIn("allowed: listen, mode", message)

    def test_bad_value(self) -> None:
        """A bad value is quoted with what is allowed."""
        message = self.error("[health]\ninterval = 2x\n[backend:a]\naddress=h:1\n")
        self.assertIn("[health] interval", message)
        self.assertIn("'2x'", message)
        self.assertIn("500ms, 2s, 1m", message)

    def test_bad_mode_and_algorithm(self) -> None:
        """Enumerated keys list their allowed values."""
        self.assertIn(
            "http, tcp", self.error("[txlb]\nmode=udp\n[backend:a]\naddress=h:1\n")
        )
        message = self.error("[txlb]\nalgorithm=fastest\n[backend:a]\naddress=h:1\n")
        self.assertIn("least_conn", message)

    def test_workers(self) -> None:
        """workers: 1 to 256 processes, or auto (one per CPU this process may
        run on); anything else is named with what is allowed."""
        backend = "[backend:a]\naddress=h:1\n"
        self.assertEqual(parse(backend, "my.ini").workers, 1)
        self.assertEqual(parse("[txlb]\nworkers = 4\n" + backend, "x").workers, 4)
        auto = parse("[txlb]\nworkers = auto\n" + backend, "x").workers
        self.assertEqual(auto, len(os.sched_getaffinity(0)))
        for bad in ("0", "257", "many", "-2"):
            message = self.error(f"[txlb]\nworkers = {bad}\n" + backend)
            self.assertIn(f"[txlb] workers: '{bad}'", message)
            self.assertIn("up to 256, or auto", message)

    def test_bad_address_and_weight(self) -> None:
        """Backend addresses need host:port; weights a positive number."""
        self.assertIn(
            "[backend:a] address",
            self.error("[backend:a]\naddress = 127.0.0.1\n"),
        )
        self.assertIn("port", self.error("[backend:a]\naddress = h:99999\n").lower())
        self.assertIn(
            "[backend:a] weight",
            self.error("[backend:a]\naddress = h:1\nweight = 0\n"),
        )

    def test_no_backends(self) -> None:
        """A file without backends is refused."""
        self.assertIn("no backends", self.error("[txlb]\nlisten = tcp:1\n"))

    def test_missing_address(self) -> None:
        """A backend without an address is refused, naming the key."""
        self.assertIn("[backend:a] address", self.error("[backend:a]\nweight = 1\n"))

    def test_duplicate_address(self) -> None:
        """Two backends at one address are refused, naming both."""
        message = self.error("[backend:a]\naddress = h:1\n[backend:b]\naddress = h:1\n")
        self.assertIn("[backend:b] address", message)
        self.assertIn("[backend:a]", message)

    def test_duplicate_section_and_key(self) -> None:
        """Repeated sections and keys are refused."""
        self.assertIn(
            "appears twice",
            self.error("[backend:a]\naddress = h:1\n[backend:a]\naddress = h:2\n"),
        )
        self.assertIn(
            "[backend:a] address",
            self.error("[backend:a]\naddress = h:1\naddress = h:2\n"),
        )

    def test_not_ini(self) -> None:
        """Text that is not INI is refused."""
        self.assertIn("not an INI file", self.error("address = h:1\n"))

    def test_timeout_above_interval(self) -> None:
        """A health timeout longer than the interval is refused."""
        message = self.error(
            "[health]\ninterval=1s\ntimeout=2s\n[backend:a]\naddress=h:1\n"
        )
        self.assertIn("[health] timeout", message)

    def test_unreadable_file(self) -> None:
        """A missing file is reported with its path and the reason."""
        with self.assertRaises(ConfigError) as caught:
            load("/nonexistent/lb.ini")
        self.assertIn("/nonexistent/lb.ini", str(caught.exception))
        self.assertIn("No such file", str(caught.exception))

    def test_load_reads_file(self) -> None:
        """load() parses a real file and names it in the config."""
        fd, path = tempfile.mkstemp(suffix=".ini")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(GOOD)
        self.assertEqual(load(path).filename, path)


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=300))
    def test_any_text(self, text: str) -> None:
        """Any text either parses or raises ConfigError: never anything else."""
        try:
            parse(text)
        except ConfigError as e:
            self.assertNotIn("\n", str(e))

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from(["listen", "mode", "algorithm", "retries", "connect_timeout"]),
        st.text(alphabet=st.characters(blacklist_characters="\r\n[]"), max_size=20),
    )
    def test_any_value(self, key: str, value: str) -> None:
        """Any value for a known key parses or is refused naming that key."""
        try:
            parse(f"[txlb]\n{key} = {value}\n[backend:a]\naddress = h:1\n")
        except ConfigError as e:
            self.assertIn(f"[txlb] {key}", str(e))


class FailureHandlingKeysTests(SynchronousTestCase):
    def test_health_outlier_and_retry_keys(self) -> None:
        """[health], [outlier] and retry keys parse with their units."""
        config = parse(
            "[txlb]\nretry_budget = 25%\npanic_threshold = 50\n"
            "[health]\nexpect_status = 200, 204-206, 3xx\nexpect_body = ok\n"
            "slow_start = 30s\ninitial_state = unknown\n"
            "[outlier]\nconsecutive_failures = 3\nbase_ejection_time = 10s\n"
            "max_ejection_time = 1m\nmax_ejected_percent = 34\n"
            "[backend:a]\naddress = h:1\n"
        )
        self.assertEqual(
            (config.proxy.retry_budget, config.balancing.panic_threshold), (25, 50)
        )
        self.assertEqual(
            config.health.expect_status, ((200, 200), (204, 206), (300, 399))
        )
        self.assertEqual(config.health.expect_body, "ok")
        self.assertEqual(config.health.slow_start, 30.0)
        self.assertEqual(config.health.initial_state, "unknown")
        self.assertEqual(config.outlier.consecutive_failures, 3)
        self.assertEqual(config.outlier.base_ejection_time, 10.0)
        self.assertEqual(config.outlier.max_ejection_time, 60.0)
        self.assertEqual(config.outlier.max_ejected_percent, 34)
        self.assertEqual(config.backends[0].health, config.health)

    def test_per_backend_health_overrides(self) -> None:
        """health_* keys in a backend section override [health] for it alone,
        whatever order the sections come in."""
        config = parse(
            "[backend:a]\naddress = h:1\nhealth_path = /ping\nhealth_fall = 5\n"
            "[backend:b]\naddress = h:2\n"
            "[health]\npath = /health\nfall = 2\ninterval = 3s\n"
        )
        a, b = config.backends
        self.assertEqual(
            (a.health.path, a.health.fall, a.health.interval), ("/ping", 5, 3.0)
        )
        self.assertEqual((b.health.path, b.health.fall), ("/health", 2))

    def test_bad_new_values(self) -> None:
        """Bad statuses, percentages and overrides are named with what is allowed."""
        cases = {
            "[health]\nexpect_status = 700\n": "[health] expect_status",
            "[health]\ninitial_state = up\n": "healthy, unknown",
            "[txlb]\nretry_budget = 120\n": "[txlb] retry_budget",
            "[outlier]\nmax_ejected_percent = -1\n": "[outlier] max_ejected_percent",
            "[outlier]\nejection = 1\n": "allowed: consecutive_failures",
        }
        for text, expected in cases.items():
            with self.assertRaises(ConfigError) as caught:
                parse(text + "[backend:a]\naddress = h:1\n", "f.ini")
            self.assertIn(expected, str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            parse("[backend:a]\naddress = h:1\nhealth_timeout = 5s\n", "f.ini")
        self.assertIn(
            "[backend:a] health_timeout: timeout must not exceed interval",
            str(caught.exception),
        )


class TrustedProxiesConfigTests(SynchronousTestCase):
    def test_default_trusts_nobody(self) -> None:
        """Without trusted_proxies no address is trusted."""
        self.assertEqual(
            parse("[backend:a]\naddress = h:1\n").proxy.trusted_proxies, ()
        )

    def test_addresses_and_networks(self) -> None:
        """Addresses become one-host networks; host bits of a CIDR are ignored."""
        config = parse(
            "[txlb]\ntrusted_proxies = 127.0.0.1, 10.1.2.3/8 ,, ::1, fd00::/8\n"
            "[backend:a]\naddress = h:1\n"
        )
        self.assertEqual(
            [str(n) for n in config.proxy.trusted_proxies],
            ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"],
        )

    def test_bad_entry(self) -> None:
        """A name or bad prefix is refused with what is allowed."""
        for value in ("nginx", "10.0.0.0/33", "127.0.0.1 10.0.0.1"):
            with self.assertRaises(ConfigError) as caught:
                parse(
                    f"[txlb]\ntrusted_proxies = {value}\n[backend:a]\naddress = h:1\n"
                )
            self.assertIn("[txlb] trusted_proxies", str(caught.exception))
            self.assertIn("comma list of addresses and networks", str(caught.exception))


class TCPModeKeysTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """idle_timeout defaults to 10 minutes and proxy_protocol to none."""
        config = parse("[backend:a]\naddress = h:1\n")
        self.assertEqual(config.proxy.idle_timeout, 600.0)
        self.assertEqual(config.backends[0].proxy_protocol, "none")

    def test_tcp_mode_keys(self) -> None:
        """mode = tcp with its stats endpoint, idle timeout and a PROXY
        protocol version per backend."""
        config = parse(
            "[txlb]\nmode = tcp\nstats_listen = tcp:9000\nidle_timeout = 90s\n"
            "[backend:a]\naddress = h:1\nproxy_protocol = v1\n"
            "[backend:b]\naddress = h:2\nproxy_protocol = v2\n"
            "[backend:c]\naddress = h:3\n"
        )
        self.assertEqual(config.mode, "tcp")
        self.assertEqual(config.proxy.idle_timeout, 90.0)
        self.assertEqual(
            [b.proxy_protocol for b in config.backends], ["v1", "v2", "none"]
        )

    def test_idle_timeout_zero_is_never(self) -> None:
        """idle_timeout = 0 is allowed (never); a bad value names the key."""
        self.assertEqual(
            parse(
                "[txlb]\nidle_timeout = 0\n[backend:a]\naddress=h:1\n"
            ).proxy.idle_timeout,
            0.0,
        )
        with self.assertRaises(ConfigError) as caught:
            parse("[txlb]\nidle_timeout = soon\n[backend:a]\naddress=h:1\n", "f.ini")
        self.assertIn(
            "f.ini: [txlb] idle_timeout: 'soon' is not valid", str(caught.exception)
        )

    def test_bad_proxy_protocol(self) -> None:
        """An unknown PROXY protocol version lists the allowed ones."""
        with self.assertRaises(ConfigError) as caught:
            parse(
                "[txlb]\nmode = tcp\nstats_listen = tcp:9000\n"
                "[backend:a]\naddress = h:1\nproxy_protocol = v3\n",
                "f.ini",
            )
        message = str(caught.exception)
        self.assertIn("[backend:a] proxy_protocol", message)
        self.assertIn("none, v1, v2", message)

    def test_tcp_mode_needs_stats_listen(self) -> None:
        """In tcp mode listen carries raw TCP, so the stats app needs its own
        endpoint; leaving it out is an error saying so."""
        with self.assertRaises(ConfigError) as caught:
            parse("[txlb]\nmode = tcp\n[backend:a]\naddress = h:1\n", "f.ini")
        message = str(caught.exception)
        self.assertIn("f.ini: [txlb] mode:", message)
        self.assertIn("set stats_listen", message)

    def test_proxy_protocol_needs_tcp_mode(self) -> None:
        """proxy_protocol in HTTP mode is refused rather than ignored."""
        with self.assertRaises(ConfigError) as caught:
            parse("[backend:a]\naddress = h:1\nproxy_protocol = v1\n", "f.ini")
        self.assertIn(
            "f.ini: [backend:a] proxy_protocol: needs mode = tcp", str(caught.exception)
        )


class BackendProtectionKeysTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """No limit, a queue of 1024 and a 5 s queue timeout by default."""
        config = parse("[backend:a]\naddress = h:1\n")
        self.assertEqual(config.backends[0].max_connections, 0)
        self.assertEqual(
            (config.balancing.queue_size, config.balancing.queue_timeout), (1024, 5.0)
        )

    def test_values(self) -> None:
        """max_connections per backend; queue_size 0 (no queue) is allowed."""
        config = parse(
            "[txlb]\nqueue_size = 0\nqueue_timeout = 250ms\n"
            "[backend:a]\naddress = h:1\nmax_connections = 4\n"
            "[backend:b]\naddress = h:2\n"
        )
        self.assertEqual([b.max_connections for b in config.backends], [4, 0])
        self.assertEqual(
            (config.balancing.queue_size, config.balancing.queue_timeout), (0, 0.25)
        )

    def test_bad_values(self) -> None:
        """Bad values are named in one line with what is allowed."""
        cases = {
            "[txlb]\nqueue_size = -1\n": "f.ini: [txlb] queue_size: '-1' is not"
            " valid; expected a whole number, 0 (no queue: 503 at once) or more",
            "[txlb]\nqueue_timeout = 0\n": "f.ini: [txlb] queue_timeout: '0' is not"
            " valid; expected a positive duration",
            "[txlb]\nqueue_timeout = soon\n": "[txlb] queue_timeout: 'soon'",
        }
        for text, expected in cases.items():
            with self.assertRaises(ConfigError) as caught:
                parse(text + "[backend:a]\naddress = h:1\n", "f.ini")
            self.assertIn(expected, str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            parse("[backend:a]\naddress = h:1\nmax_connections = 2.5\n", "f.ini")
        self.assertEqual(
            str(caught.exception),
            "f.ini: [backend:a] max_connections: '2.5' is not valid; expected a"
            " whole number, 0 (unlimited) or more: requests or connections at once",
        )
