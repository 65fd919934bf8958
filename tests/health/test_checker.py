"""
Tests for L{txlb.health} and L{txlb.probes}: a Clock, and StubTreq standing
in for the backends.
"""

from __future__ import annotations

from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface.verify import verifyObject

from tests.support import registry_of
from txlb.config import Address, BackendConfig, Config, HealthConfig
from txlb.core.registry import Registry
from txlb.health.checker import HealthChecker
from txlb.health.probes import HTTPProbe, IProbe, TCPProbe, Verdict, judge


class Backends(Resource):
    """Answers health probes per backend (told apart by Host): a code and
    body, or never."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[bytes, tuple[int, bytes] | None] = {}
        self.seen: list[tuple[bytes, bytes]] = []

    def render_GET(self, request: Any) -> Any:
        host = request.getHeader(b"host")
        self.seen.append((host, request.uri))
        answer = self.answers.get(host, (200, b"ok"))
        if answer is None:
            return NOT_DONE_YET
        request.setResponseCode(answer[0])
        return answer[1]


class NoTCP:
    """A TCP probe that must not be used."""

    def check(self, address: Address, health: HealthConfig) -> Deferred[Verdict]:
        raise AssertionError("TCP probe used")


HEALTH = HealthConfig(path="/health", interval=2, timeout=1, rise=2, fall=3)


class Setup:
    def __init__(
        self, n: int = 2, own: HealthConfig | None = None, **overrides: Any
    ) -> None:
        """
        @param own: the last backend's own health settings (the others'
            are C{HEALTH} with C{overrides}).
        """
        self.clock = Clock()
        health = attrs.evolve(HEALTH, **overrides)
        self.configs = [
            BackendConfig(f"b{i}", Address("127.0.0.1", 9001 + i), health=health)
            for i in range(n)
        ]
        if own is not None:
            self.configs[-1] = attrs.evolve(self.configs[-1], health=own)
        self.config = Config("test.ini", tuple(self.configs), health=health)
        self.registry = Registry.from_config(self.config, self.clock)
        self.backends = Backends()
        self.stub = StubTreq(self.backends)
        self.checker = HealthChecker.from_config(
            self.config,
            self.registry,
            HTTPProbe(self.stub),  # type: ignore[arg-type]
            NoTCP(),  # type: ignore[arg-type]
            self.clock,
        )

    def answer(self, index: int, code: int | None, body: bytes = b"ok") -> None:
        host = b"127.0.0.1:%d" % (9001 + index)
        self.backends.answers[host] = None if code is None else (code, body)

    def start(self) -> None:
        self.checker.startService()
        self.stub.flush()

    def tick(self, seconds: float = 2) -> None:
        self.clock.advance(seconds)
        self.stub.flush()

    def states(self) -> list[str]:
        return [b.state for b in self.registry.backends]


class JudgeTests(SynchronousTestCase):
    def test_status_ranges_and_body(self) -> None:
        """Expected statuses and body text decide; reasons say why in words."""
        self.assertTrue(judge(204, b"", HEALTH).ok)
        self.assertTrue(judge(302, b"", HEALTH).ok)
        self.assertEqual(judge(503, b"", HEALTH).reason, "probe answered 503")
        strict = attrs.evolve(HEALTH, expect_status=((200, 200),), expect_body="UP")
        self.assertFalse(judge(204, b"UP", strict).ok)
        self.assertEqual(judge(200, b"DOWN", strict).reason, "probe answer lacks 'UP'")
        self.assertTrue(judge(200, b"status: UP", strict).ok)

    def test_probes_provide_interface(self) -> None:
        """Both probes provide IProbe."""
        verifyObject(IProbe, HTTPProbe(StubTreq(Resource())))  # type: ignore[arg-type]
        verifyObject(IProbe, TCPProbe(MemoryReactorClock()))


class CheckerTests(SynchronousTestCase):
    def test_probes_every_backend_each_interval(self) -> None:
        """Every backend's health path is probed at start and every interval."""
        s = Setup()
        s.start()
        self.assertEqual(
            s.backends.seen,
            [(b"127.0.0.1:9001", b"/health"), (b"127.0.0.1:9002", b"/health")],
        )
        s.tick()
        self.assertEqual(len(s.backends.seen), 4)
        s.checker.stopService()

    def test_fall_and_rise(self) -> None:
        """fall bad probes take a backend out, leaving within interval*fall;
        rise good ones bring it back; each change keeps its time and cause."""
        s = Setup()
        s.answer(0, 503)
        s.start()
        s.tick()
        self.assertEqual(s.states(), ["healthy", "healthy"])
        s.tick()
        self.assertEqual(s.states(), ["unhealthy", "healthy"])
        last = s.registry.backends[0].history[-1]
        self.assertEqual(last.reason, "3/3 probes bad: probe answered 503")
        self.assertEqual(last.time, 4)
        s.answer(0, 200)
        s.tick()
        self.assertEqual(s.states(), ["unhealthy", "healthy"])
        s.tick()
        self.assertEqual(s.states(), ["healthy", "healthy"])
        s.checker.stopService()

    def test_expected_body(self) -> None:
        """A 200 without the expected body text counts as bad."""
        s = Setup(fall=1, expect_body="ok")
        s.answer(1, 200, b"degraded")
        s.start()
        self.assertEqual(s.states(), ["healthy", "unhealthy"])
        self.assertIn("lacks 'ok'", s.registry.backends[1].history[-1].reason)

    def test_hanging_probe_times_out_without_stopping_loop(self) -> None:
        """A probe that never answers is cut off at its timeout and counts as
        bad; the other backend and the loop go on at the same pace."""
        s = Setup(fall=2)
        s.answer(0, None)
        s.start()
        s.tick(1)  # the first probe's timeout
        s.tick(1)  # second round
        s.tick(1)  # its timeout: two bad in a row
        self.assertEqual(s.states(), ["unhealthy", "healthy"])
        self.assertEqual(
            s.registry.backends[0].history[-1].reason,
            "2/2 probes bad: probe timed out after 1s",
        )
        probes_of_b1 = [host for host, _ in s.backends.seen if host.endswith(b"9002")]
        self.assertEqual(len(probes_of_b1), 2)
        s.tick(1)
        probes_of_b1 = [host for host, _ in s.backends.seen if host.endswith(b"9002")]
        self.assertEqual(len(probes_of_b1), 3)

    def test_late_tick_keeps_the_interval(self) -> None:
        """A tick that runs late (a busy reactor) does not skip the next
        probe: each backend is still probed every interval."""
        s = Setup(n=1)
        s.start()
        s.clock.advance(2.05)  # the tick at t=2 ran 50ms late
        s.stub.flush()
        s.clock.advance(1.95)  # the tick at t=4, on time
        s.stub.flush()
        self.assertEqual(len(s.backends.seen), 3)

    def test_initial_unknown_waits_for_first_probe(self) -> None:
        """With initial_state = unknown a backend takes no traffic until its
        first probe, which decides at once."""
        s = Setup(initial_state="unknown")
        s.answer(1, 500)
        self.assertEqual(s.states(), ["unknown", "unknown"])
        self.assertIsNone(s.registry.acquire())
        s.start()
        self.assertEqual(s.states(), ["healthy", "unhealthy"])
        lease = s.registry.acquire()
        assert lease is not None
        self.assertEqual(lease.backend.name, "b0")

    def test_per_backend_settings(self) -> None:
        """A backend's own path and interval are used for it alone."""
        s = Setup(own=attrs.evolve(HEALTH, path="/ping", interval=4, timeout=1))
        s.start()
        s.tick()
        s.tick()
        paths = [(host[-4:], uri) for host, uri in s.backends.seen]
        self.assertEqual(paths.count((b"9001", b"/health")), 3)
        self.assertEqual(paths.count((b"9002", b"/ping")), 2)

    def test_empty_path_uses_tcp_probe(self) -> None:
        """Without an HTTP path the TCP probe is used."""
        clock = Clock()
        tcp = attrs.evolve(HEALTH, path="", fall=1)
        registry = registry_of(
            [BackendConfig("t", Address("127.0.0.1", 9), health=tcp)], clock
        )
        calls: list[Address] = []

        class FakeTCP:
            def check(
                self, address: Address, health: HealthConfig
            ) -> Deferred[Verdict]:
                calls.append(address)
                return succeed(Verdict(False, "probe failed: refused"))

        checker = HealthChecker(registry, NoTCP(), FakeTCP(), clock, tcp.interval)  # type: ignore[arg-type]
        checker.startService()
        self.assertEqual(calls, [Address("127.0.0.1", 9)])
        self.assertEqual(registry.backends[0].state, "unhealthy")


class TCPProbeTests(SynchronousTestCase):
    def test_connect_and_refusal(self) -> None:
        """The TCP probe is good when a connection is accepted, and fails when
        refused (the checker turns the failure into a verdict)."""
        reactor = MemoryReactorClock()
        probe = TCPProbe(reactor)
        results: list[Any] = []
        probe.check(Address("127.0.0.1", 9), HEALTH).addBoth(results.append)
        factory = reactor.tcpClients[0][2]
        self.assertEqual(reactor.tcpClients[0][:2], ("127.0.0.1", 9))
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertIsInstance(results[0], Failure)
