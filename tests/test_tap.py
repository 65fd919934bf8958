"""Tests for L{txlb.tap}: options, start-up errors and service wiring."""

from __future__ import annotations

import io
import os
import tempfile
from unittest import mock

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from txlb import tap
from txlb.fleet.sharing import Fleet
from txlb.http.frontend import HTTPFrontendFactory
from txlb.http.routing import Router
from txlb.observe.assets import WebAssets
from txlb.tap import Options, makeService
from txlb.tcp.proxy import TCPProxyFactory

INI = """
[txlb]
listen = tcp:18080:interface=127.0.0.1, tcp:18081
stats_listen = {stats}
access_log = {log}

[backend:a]
address = 127.0.0.1:9001
"""


class OptionsTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        fd, path = tempfile.mkstemp(suffix=".ini")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def parse_failing(self, argv: list[str]) -> str:
        stderr = io.StringIO()
        with mock.patch("sys.stderr", stderr), self.assertRaises(SystemExit) as e:
            Options().parseOptions(argv)
        self.assertEqual(e.exception.code, 1)
        return stderr.getvalue()

    def test_loads_config(self) -> None:
        """--config is read and validated when the options are parsed."""
        path = self.write(INI.format(stats="", log=""))
        options = Options()
        options.parseOptions(["--config", path])
        self.assertEqual(options.config.listen[1], "tcp:18081")

    def test_bad_config_one_line(self) -> None:
        """A wrong key stops start-up with exactly one line on stderr."""
        path = self.write("[txlb]\nlisten = tcp:1\nfoo = 1\n[backend:a]\naddress=h:1\n")
        message = self.parse_failing(["--config", path])
        self.assertEqual(message.count("\n"), 1)
        self.assertIn(f"{path}: [txlb] foo: unknown key", message)

    def test_bad_endpoint(self) -> None:
        """An endpoint string that does not parse is reported before binding."""
        path = self.write("[txlb]\nlisten = tpc:8080\n[backend:a]\naddress=h:1\n")
        message = self.parse_failing(["--config", path])
        self.assertIn("[txlb] listen: 'tpc:8080' is not a Twisted endpoint", message)

    def test_missing_file(self) -> None:
        """A config file that does not exist is reported with its path."""
        message = self.parse_failing(["--config", "/nonexistent.ini"])
        self.assertIn("/nonexistent.ini: cannot read the file", message)

    def test_check(self) -> None:
        """--check validates and exits 0."""
        path = self.write(INI.format(stats="", log=""))
        stdout = io.StringIO()
        with mock.patch("sys.stdout", stdout), self.assertRaises(SystemExit) as e:
            Options().parseOptions(["--config", path, "--check"])
        self.assertEqual(e.exception.code, 0)
        self.assertIn("configuration is valid", stdout.getvalue())


class MakeServiceTests(SynchronousTestCase):
    def service(self, stats: str = "", log: str = "") -> MemoryReactorClock:
        fd, path = tempfile.mkstemp(suffix=".ini")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(INI.format(stats=stats, log=log))
        options = Options()
        options.parseOptions(["--config", path])
        reactor = MemoryReactorClock()
        service = makeService(options, reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return reactor

    def test_listens_on_every_endpoint(self) -> None:
        """Each listen endpoint gets the one proxy site; stats share it."""
        reactor = self.service()
        ports = [(port, factory) for port, factory, _, interface in reactor.tcpServers]
        self.assertEqual([p for p, _ in ports], [18080, 18081])
        self.assertIs(ports[0][1], ports[1][1])
        front = ports[0][1]
        assert isinstance(front, HTTPFrontendFactory)
        assert isinstance(front.handle, Router)
        self.assertTrue(front.handle.reserved(b"/api/server-stats"))

    def test_stats_listen(self) -> None:
        """With stats_listen the stats app gets its own port and the proxy
        reserves no paths."""
        reactor = self.service(stats="tcp:19000")
        self.assertEqual([s[0] for s in reactor.tcpServers], [18080, 18081, 19000])
        front = reactor.tcpServers[0][1]
        self.assertFalse(front.handle.reserved(b"/api/server-stats"))

    def test_health_checks_start(self) -> None:
        """The health checker probes at start through the reactor."""
        reactor = self.service()
        self.assertEqual(
            [(host, port) for host, port, *_ in reactor.tcpClients],
            [("127.0.0.1", 9001)],
        )

    def test_unwritable_access_log(self) -> None:
        """An access log that cannot be opened stops start-up with one line."""
        stderr = io.StringIO()
        with mock.patch("sys.stderr", stderr), self.assertRaises(SystemExit):
            self.service(log="/nonexistent/dir/access.log")
        self.assertIn("[txlb] access_log: cannot open", stderr.getvalue())


class FleetServiceTests(SynchronousTestCase):
    def write(self, fleet: str) -> str:
        fd, path = tempfile.mkstemp(suffix=".ini")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(INI.format(stats="tcp:19000", log="") + fleet)
        return path

    def test_fleet_wired(self) -> None:
        """
        [fleet] starts the node's exchanges with Redis through the reactor
        (a connection to its address, at once), and the stats, metrics and
        /healthz see it; the stats port stays open through the drain.
        """
        path = self.write("[fleet]\nredis = redis://127.0.0.1:16399/0\nnode = lb-t\n")
        options = Options()
        options.parseOptions(["--config", path])
        reactor = MemoryReactorClock()
        service = makeService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIn(("127.0.0.1", 16399), [c[:2] for c in reactor.tcpClients])
        (fleet,) = [s for s in service if isinstance(s, Fleet)]
        self.assertEqual((fleet.node, fleet.interval, fleet.ttl), ("lb-t", 0.1, 0.25))
        stats = reactor.tcpServers[-1][1]
        assert isinstance(stats, Site)
        client = StubTreq(stats.resource)
        response = self.successResultOf(client.get("http://lb/api/server-stats"))
        snapshot = self.successResultOf(response.json())
        self.assertEqual(snapshot["fleet"]["status"], "connecting")
        self.assertEqual(snapshot["fleet"]["store"], "redis://127.0.0.1:16399/0")
        response = self.successResultOf(client.get("http://lb/metrics"))
        self.assertIn(b"txlb_fleet_up 0.0", self.successResultOf(response.content()))
        response = self.successResultOf(client.get("http://lb/healthz"))
        self.assertEqual(response.code, 200)
        # SIGTERM: not ready at once.
        service.stopService()
        response = self.successResultOf(client.get("http://lb/healthz"))
        self.assertEqual(response.code, 503)
        self.assertEqual(
            self.successResultOf(response.text()), "draining: shutting down\n"
        )

    def test_bad_host_name(self) -> None:
        """
        Without node, a host name that cannot name a node stops start-up
        with one line, before anything is bound.
        """
        path = self.write("[fleet]\nredis = redis://127.0.0.1:16399/0\n")
        stderr = io.StringIO()
        with (
            mock.patch("socket.gethostname", return_value="bad host"),
            mock.patch("sys.stderr", stderr),
            self.assertRaises(SystemExit) as e,
        ):
            Options().parseOptions(["--config", path])
        self.assertEqual(e.exception.code, 1)
        self.assertEqual(stderr.getvalue().count("\n"), 1)
        self.assertIn("[fleet] node: this host's name 'bad host'", stderr.getvalue())


class DashboardFilesTests(SynchronousTestCase):
    def start(self) -> list[dict[str, object]]:
        """Make the service; return txlb.tap's log events."""
        events: list[dict[str, object]] = []
        self.patch(tap, "_log", Logger(namespace="txlb.tap", observer=events.append))
        fd, path = tempfile.mkstemp(suffix=".ini")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(INI.format(stats="", log=""))
        options = Options()
        options.parseOptions(["--config", path])
        makeService(options, MemoryReactorClock())
        return events

    def test_complete_files_no_warning(self) -> None:
        """With every dashboard file present, start-up warns of nothing."""
        self.assertEqual(WebAssets.find().missing, ())
        self.assertEqual(self.start(), [])

    def test_missing_chart_js_warns_once(self) -> None:
        """
        Without vendor/chart.umd.js (index.html present), start-up logs one
        warning naming the file, where it was looked for and how to get it.
        """
        found = WebAssets.find()
        files = {k: v for k, v in found.files.items() if not k.startswith("vendor/")}
        partial = WebAssets(files, "/somewhere/txlb/web")
        self.patch(WebAssets, "find", classmethod(lambda cls: partial))
        events = self.start()
        self.assertEqual(len(events), 1, events)
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(
            formatEvent(event),
            "the dashboard is unavailable: vendor/chart.umd.js missing from"
            " /somewhere/txlb/web; install txlb from a wheel built by"
            " `python -m build` (it carries Chart.js), or in a txlb checkout"
            " run `make web-vendor` (npm ci) and reinstall txlb",
        )


class TCPModeServiceTests(SynchronousTestCase):
    def test_tcp_mode(self) -> None:
        """mode = tcp puts the TCP relay factory on every listen endpoint and
        the stats app (a plain site) on stats_listen, over one registry."""
        fd, path = tempfile.mkstemp(suffix=".ini")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(
                "[txlb]\nmode = tcp\nlisten = tcp:18080, tcp:18081\n"
                "stats_listen = tcp:19000\n[backend:a]\naddress = 127.0.0.1:9001\n"
            )
        options = Options()
        options.parseOptions(["--config", path])
        reactor = MemoryReactorClock()
        service = makeService(options, reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        ports = {port: factory for port, factory, _, _ in reactor.tcpServers}
        self.assertEqual(sorted(ports), [18080, 18081, 19000])
        self.assertIsInstance(ports[18080], TCPProxyFactory)
        self.assertIs(ports[18080], ports[18081])
        self.assertIsInstance(ports[19000], Site)
        self.assertNotIsInstance(ports[19000], HTTPFrontendFactory)
        relay = ports[18080]
        assert isinstance(relay, TCPProxyFactory)
        self.assertEqual(relay.proxy.registry.backends[0].name, "a")
