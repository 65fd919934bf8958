"""Tests for L{txlb.health}: a Clock, and StubTreq standing in for backends."""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txlb.config import Address, BackendConfig, HealthConfig
from txlb.health import HealthChecker, judge
from txlb.registry import Registry


class Backends(Resource):
    """Answers /health per backend (told apart by Host): a code, or never."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.codes: dict[bytes, int | None] = {}
        self.seen: list[bytes] = []

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        host = request.getHeader(b"host")
        self.seen.append(request.uri)
        code = self.codes.get(host, 200)
        if code is None:
            return NOT_DONE_YET
        request.setResponseCode(code)
        return b"ok"


def setup(
    n: int = 2, **health: float
) -> tuple[Registry, Backends, StubTreq, Clock, HealthChecker]:
    clock = Clock()
    configs = [BackendConfig(f"b{i}", Address("127.0.0.1", 9001 + i)) for i in range(n)]
    registry = Registry(configs, clock)
    backends = Backends()
    stub = StubTreq(backends)
    settings: dict[str, float] = {"interval": 2, "timeout": 1, "rise": 2, "fall": 3}
    config = HealthConfig(path="/health", **{**settings, **health})  # type: ignore[arg-type]
    checker = HealthChecker(registry, stub, clock, config)  # type: ignore[arg-type]
    return registry, backends, stub, clock, checker


def tick(clock: Clock, stub: StubTreq, seconds: float = 2) -> None:
    clock.advance(seconds)
    stub.flush()


class JudgeTests(SynchronousTestCase):
    def test_classify(self) -> None:
        """2xx-3xx is good; other codes, errors and timeouts are bad, with words."""
        self.assertTrue(judge(204, None, 1).ok)
        self.assertTrue(judge(302, None, 1).ok)
        self.assertEqual(judge(503, None, 1).reason, "probe answered 503")
        self.assertEqual(
            judge(None, "timeout", 1.5).reason, "probe timed out after 1.5s"
        )
        self.assertFalse(judge(None, "refused", 1).ok)


class CheckerTests(SynchronousTestCase):
    def test_probes_every_backend_each_interval(self) -> None:
        """Every backend's health path is probed at once and every interval."""
        _, backends, stub, clock, checker = setup()
        checker.startService()
        stub.flush()
        self.assertEqual(backends.seen, [b"/health", b"/health"])
        tick(clock, stub)
        self.assertEqual(len(backends.seen), 4)
        checker.stopService()

    def test_fall_and_rise(self) -> None:
        """fall bad probes take a backend out; rise good ones bring it back."""
        registry, backends, stub, clock, checker = setup()
        backends.codes[b"127.0.0.1:9001"] = 503
        checker.startService()
        stub.flush()
        tick(clock, stub)
        self.assertTrue(registry.backends[0].healthy)
        tick(clock, stub)
        self.assertFalse(registry.backends[0].healthy)
        self.assertTrue(registry.backends[1].healthy)
        self.assertIn(
            "3/3 probes bad: probe answered 503",
            registry.backends[0].history[-1].reason,
        )
        self.assertEqual(registry.backends[0].history[-1].time, 4)
        backends.codes[b"127.0.0.1:9001"] = 200
        tick(clock, stub)
        self.assertFalse(registry.backends[0].healthy)
        tick(clock, stub)
        self.assertTrue(registry.backends[0].healthy)
        checker.stopService()

    def test_hanging_probe_times_out_without_stopping_loop(self) -> None:
        """A probe that never answers is cut off at timeout and counts as bad;
        the other backend's probes and the loop go on."""
        registry, backends, stub, clock, checker = setup(fall=2)
        backends.codes[b"127.0.0.1:9001"] = None
        checker.startService()
        stub.flush()
        tick(clock, stub, 1)  # the first probe's timeout
        tick(clock, stub, 1)  # second round starts
        tick(clock, stub, 1)  # its timeout: two bad in a row
        self.assertFalse(registry.backends[0].healthy)
        self.assertIn("timed out after 1s", registry.backends[0].history[-1].reason)
        self.assertTrue(registry.backends[1].healthy)
        before = len(backends.seen)
        tick(clock, stub, 1)
        self.assertGreater(len(backends.seen), before)
        checker.stopService()
