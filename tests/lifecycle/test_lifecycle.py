"""
Tests for L{txlb.lifecycle}: the graceful shutdown's drain timing and the
reload's additions, removals, weights and rejections, on a memory reactor.
"""

from __future__ import annotations

import os
import signal
import tempfile
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.core.test_registry import wait
from txlb.config import Address, Config, HealthConfig, parse
from txlb.core.registry import Registry
from txlb.health.checker import HealthChecker
from txlb.health.probes import Verdict
from txlb.http.proxy import HTTPProxy
from txlb.lifecycle.reload import Reloader
from txlb.lifecycle.shutdown import TICK, Lifecycle
from txlb.lifecycle.signals import ReloadOnSignal
from txlb.observe.webapp import StatsApp
from txlb.tap import Options, makeService

# --- graceful shutdown -----------------------------------------------------------


class FakeTransport:
    def __init__(self, owner: FakeConnection) -> None:
        self.owner = owner
        self.closed = ""

    def loseConnection(self) -> None:
        self.closed = "closed"

    def abortConnection(self) -> None:
        self.closed = "aborted"


class FakeConnection:
    """A TCP-mode client connection as the drain sees it: it runs until it ends."""

    def __init__(self, connections: set[Any]) -> None:
        self.connections = connections
        self.transport = FakeTransport(self)
        connections.add(self)

    def settle(self) -> bool:
        return False

    def lost(self) -> None:
        self.connections.discard(self)


class FakeChannel(FakeConnection):
    """
    An HTTP connection as the drain sees it: L{HTTPFrontend.settle}'s
    contract (tests/http/test_frontend.py checks the real one).
    """

    closing = False

    def __init__(self, connections: set[Any]) -> None:
        super().__init__(connections)
        self.requests: list[FakeRequest] = []

    def settle(self) -> bool:
        self.closing = True
        return not any(r.proxied for r in self.requests)


class FakeRequest:
    """A request being proxied or served by the stats app."""

    def __init__(self, proxied: bool = True) -> None:
        self.proxied = proxied


class Recorder(Service):
    def __init__(self, name: str, order: list[str]) -> None:
        self.name = name
        self.order = order

    def stopService(self) -> None:
        super().stopService()
        self.order.append(self.name)


class Listener(StreamServerEndpointService):
    def __init__(self, order: list[str]) -> None:
        super().__init__(None, None)  # type: ignore[arg-type]
        self.order = order

    def startService(self) -> None:
        Service.startService(self)

    def stopService(self) -> Deferred[None]:
        self.running = False
        self.order.append("listener")
        return Deferred.fromCoroutine(_nothing())


async def _nothing() -> None:
    return None


class GraceTests(SynchronousTestCase):
    """shutdown_grace, the draining flag and the listeners kept for the drain."""

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.order: list[str] = []
        self.top = Lifecycle(self.clock, shutdown_timeout=30, grace=5)
        Listener(self.order).setServiceParent(self.top)
        self.stats = StatsListener(self.order)
        self.stats.setServiceParent(self.top)
        self.top.listen_until_drained(self.stats)
        Recorder("access log", self.order).setServiceParent(self.top)
        self.connections: set[Any] = set()
        self.top.watch(self.connections)
        self.top.startService()

    def test_grace_then_drain(self) -> None:
        """
        Draining at once; the ports stay open for the grace, then close and
        the drain runs; the stats port closes only after it.
        """
        self.assertFalse(self.top.draining)
        channel = FakeChannel(self.connections)
        channel.requests.append(FakeRequest())
        fired: list[object] = []
        self.top.stopService().addCallback(fired.append)
        self.assertTrue(self.top.draining)
        self.clock.advance(4.9)
        self.assertEqual(self.order, [])
        self.assertFalse(channel.closing)  # still served as usual
        self.clock.advance(0.1)
        self.assertEqual(self.order, ["listener"])
        self.assertTrue(channel.closing)
        channel.requests.clear()
        channel.lost()
        self.clock.advance(TICK)
        self.assertEqual(len(fired), 1)
        self.assertEqual(sorted(self.order[1:]), ["access log", "stats listener"])


class StatsListener(Listener):
    def stopService(self) -> Deferred[None]:
        self.running = False
        self.order.append("stats listener")
        return Deferred.fromCoroutine(_nothing())


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.order: list[str] = []
        self.top = Lifecycle(self.clock, shutdown_timeout=30)
        # Added first, so MultiService alone would stop them last.
        Listener(self.order).setServiceParent(self.top)
        Recorder("access log", self.order).setServiceParent(self.top)
        self.connections: set[Any] = set()
        self.top.watch(self.connections)
        self.top.startService()

    def stop(self) -> list[object]:
        fired: list[object] = []
        self.top.stopService().addCallback(fired.append)
        return fired

    def test_nothing_open(self) -> None:
        """With no connection open, the stop is over at once: listeners first."""
        fired = self.stop()
        self.assertEqual(len(fired), 1)
        self.assertEqual(self.order, ["listener", "access log"])

    def test_sigterm_exit_status(self) -> None:
        """
        Once drained, a stop on SIGTERM is a clean exit (twistd then exits 0
        instead of killing itself with the signal).
        """
        self.clock._exitSignal = signal.SIGTERM  # type: ignore[attr-defined]
        channel = FakeChannel(self.connections)
        channel.requests.append(FakeRequest())
        self.stop()
        self.assertEqual(self.clock._exitSignal, signal.SIGTERM)  # type: ignore[attr-defined]
        channel.lost()
        self.clock.advance(TICK)
        self.assertIsNone(self.clock._exitSignal)  # type: ignore[attr-defined]

    def test_in_flight_request_finishes_first(self) -> None:
        """
        A request in flight holds the stop (and the other services) until it
        is done; the connection is told to close after it.
        """
        channel = FakeChannel(self.connections)
        request = FakeRequest()
        channel.requests.append(request)
        fired = self.stop()
        self.assertEqual(self.order, ["listener"])
        self.assertTrue(channel.closing)
        self.clock.advance(5)
        self.assertEqual(fired, [])
        self.assertEqual(channel.transport.closed, "")
        # The response ends; the front end closes the connection.
        channel.requests.clear()
        channel.lost()
        self.clock.advance(TICK)
        self.assertEqual(len(fired), 1)
        self.assertEqual(self.order, ["listener", "access log"])

    def test_idle_keep_alive_closed(self) -> None:
        """
        An idle keep-alive connection does not hold the stop: it is closed
        once seen idle at two looks in a row (one tick), so a request already
        on its way is read first.
        """
        channel = FakeChannel(self.connections)
        fired = self.stop()
        self.assertEqual(channel.transport.closed, "")
        self.clock.advance(TICK)
        self.assertEqual(channel.transport.closed, "closed")
        channel.lost()
        self.clock.advance(TICK)
        self.assertEqual(len(fired), 1)
        self.assertEqual(self.clock.seconds(), 2 * TICK)

    def test_request_arrives_during_first_look(self) -> None:
        """A connection whose request starts before the second look is served."""
        channel = FakeChannel(self.connections)
        self.stop()
        channel.requests.append(FakeRequest())
        self.clock.advance(TICK)
        self.assertEqual(channel.transport.closed, "")
        self.assertTrue(channel.closing)

    def test_stats_request_not_waited_for(self) -> None:
        """A stats app request (an event stream, maybe) does not hold the stop."""
        channel = FakeChannel(self.connections)
        channel.requests.append(FakeRequest(proxied=False))
        self.stop()
        self.clock.advance(TICK)
        self.assertEqual(channel.transport.closed, "closed")

    def test_timeout_aborts(self) -> None:
        """
        What is still open at C{shutdown_timeout} is aborted, then the stop
        ends: not a tick earlier.
        """
        busy = FakeChannel(self.connections)
        busy.requests.append(FakeRequest())
        tcp = FakeConnection(self.connections)
        fired = self.stop()
        self.clock.pump([TICK] * 299)
        self.assertEqual(fired, [])
        self.assertEqual((busy.transport.closed, tcp.transport.closed), ("", ""))
        self.clock.advance(30 - self.clock.seconds())
        self.assertEqual(len(fired), 1)
        self.assertEqual(busy.transport.closed, "aborted")
        self.assertEqual(tcp.transport.closed, "aborted")
        self.assertEqual(self.order, ["listener", "access log"])

    def test_tcp_connection_runs_to_its_end(self) -> None:
        """A TCP-mode connection is never closed early: the stop waits for it."""
        tcp = FakeConnection(self.connections)
        fired = self.stop()
        self.clock.advance(10)
        self.assertEqual((tcp.transport.closed, fired), ("", []))
        tcp.lost()
        self.clock.advance(TICK)
        self.assertEqual(len(fired), 1)

    def test_zero_timeout(self) -> None:
        """C{shutdown_timeout = 0} aborts at once."""
        top = Lifecycle(self.clock, shutdown_timeout=0)
        connections: set[Any] = set()
        top.watch(connections)
        channel = FakeChannel(connections)
        channel.requests.append(FakeRequest())
        top.startService()
        fired: list[object] = []
        top.stopService().addCallback(fired.append)
        self.assertEqual((len(fired), channel.transport.closed), (1, "aborted"))


class MakeServiceTests(SynchronousTestCase):
    def test_wiring(self) -> None:
        """
        makeService's top service is the lifecycle, with the default
        C{shutdown_timeout} of 30 s, and it stops at once when idle.
        """
        fd, path = tempfile.mkstemp(suffix=".ini")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write("[txlb]\nlisten = tcp:0\n[backend:a]\naddress = 127.0.0.1:9\n")
        options = Options()
        options.parseOptions(["--config", path])
        reactor = MemoryReactorClock()
        top = makeService(options, reactor)
        self.assertIsInstance(top, Lifecycle)
        self.assertEqual(options.config.shutdown_timeout, 30)
        reloaders = [s for s in top if isinstance(s, ReloadOnSignal)]
        self.assertEqual(len(reloaders), 1)
        top.startService()
        fired: list[object] = []
        top.stopService().addCallback(fired.append)
        self.assertEqual(len(fired), 1)


# --- reload ----------------------------------------------------------------------

INI = """
[txlb]
listen = tcp:8080
[backend:a]
address = 127.0.0.1:9001
[backend:b]
address = 127.0.0.1:9002
{extra}
"""


class GoodProbe:
    def check(self, address: Address, health: HealthConfig) -> Deferred[Verdict]:
        return Deferred()  # never answers: the tests set health themselves


def config(extra: str = "", top: str = "") -> Config:
    text = INI.format(extra=extra)
    if top:
        text = text.replace("listen = tcp:8080\n", f"{top}\n")
    return parse(text, "lb.ini")


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.config = config()
        self.registry = Registry.from_config(self.config, self.clock)
        self.proxy = HTTPProxy.from_config(
            self.config, self.registry, self.clock, self.clock
        )
        self.health = HealthChecker.from_config(
            self.config, self.registry, GoodProbe(), GoodProbe(), self.clock
        )
        self.app = StatsApp(self.registry, self.clock)
        self.events: list[dict[str, Any]] = []
        self.patch(Reloader, "log", Logger(observer=self.events.append))
        self.reloader = Reloader(self.config, self.registry)

    def names(self) -> list[str]:
        return [b.name for b in self.registry.backends]

    def messages(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events]

    def test_add(self) -> None:
        """
        A new backend gets a registry entry, a pool, a health track, stats
        and metrics series, and traffic.
        """
        self.reloader.apply(config("[backend:c]\naddress = 127.0.0.1:9003"))
        c = self.registry.get("c")
        self.assertEqual(self.names(), ["a", "b", "c"])
        self.assertEqual(c.pool.address, Address("127.0.0.1", 9003))
        self.assertIsNotNone(c.probe)
        snapshot = self.app.stats.snapshot()
        self.assertEqual([b["name"] for b in snapshot["backends"]], ["a", "b", "c"])
        self.app.observe(c, 200, 0.01)
        body, _ = self.app.metrics.exposition(None)
        self.assertIn(b'backend="c"', body)
        leases = [self.registry.acquire() for _ in range(3)]
        self.assertEqual(
            sorted(lease.backend.name for lease in leases if lease), ["a", "b", "c"]
        )
        self.assertIn("1 added, 0 removed", self.messages()[-1])

    def test_remove_drains_first(self) -> None:
        """
        A removed backend takes no new request at once, keeps its request
        in flight, and is dropped (pool closed, track and series gone) when
        that ends.
        """
        b = self.registry.get("b")
        for _ in range(2):
            lease = self.registry.acquire()
            if lease is not None and lease.backend is b:
                held = lease
        pool = b.pool
        self.reloader.apply(
            parse(
                INI.format(extra="").replace(
                    "[backend:b]\naddress = 127.0.0.1:9002\n", ""
                ),
                "lb.ini",
            )
        )
        self.assertEqual(b.state, "draining")
        for _ in range(5):
            lease = self.registry.acquire()
            assert lease is not None
            self.assertEqual(lease.backend.name, "a")
        self.clock.advance(10)
        self.assertIn(b, self.registry.backends)
        held.release()
        self.clock.advance(TICK)
        self.assertEqual(self.names(), ["a"])
        self.assertTrue(pool._closed)
        self.assertIsNone(b.probe)
        self.assertEqual(len(self.app.stats.snapshot()["backends"]), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reweight(self) -> None:
        """A new weight applies at once; a lease in flight releases normally."""
        lease = self.registry.acquire()
        assert lease is not None
        self.reloader.apply(
            parse(INI.format(extra="").replace("9001\n", "9001\nweight = 3\n"))
        )
        a = self.registry.get("a")
        self.assertEqual((a.configured_weight, a.weight), (3, 3))
        self.assertTrue(lease.release())
        self.assertEqual(a.active, 0)

    def test_unchanged_weight_keeps_admin_weight(self) -> None:
        """A reload that does not change a weight leaves the admin's alone."""
        a = self.registry.get("a")
        self.registry.set_weight(a, 7, "admin")
        self.reloader.apply(config())
        self.assertEqual(a.configured_weight, 7)

    def test_invalid_file_rejected(self) -> None:
        """
        A file that does not parse is rejected with the one-line error, and
        the running configuration stays.
        """
        fd, path = tempfile.mkstemp(suffix=".ini")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write("[txlb]\nretries = many\n[backend:a]\naddress = 127.0.0.1:1\n")
        self.assertFalse(self.reloader.reload(path))
        self.assertEqual(self.names(), ["a", "b"])
        (message,) = self.messages()
        self.assertIn("reload rejected; the running configuration stays", message)
        self.assertIn(f"{path}: [txlb] retries: 'many' is not valid", message)

    def test_restart_only_keys(self) -> None:
        """Changed keys that need a restart are named, and keep their value."""
        self.reloader.apply(
            config(top="listen = tcp:9090\nstats_listen = tcp:9091\nretries = 1")
        )
        warning = self.messages()[0]
        self.assertIn("[txlb] listen, [txlb] stats_listen", warning)
        self.assertIn("[txlb] retries", warning)
        self.assertIn("takes a restart", warning)
        self.assertEqual(self.reloader.config.listen, ("tcp:8080",))

    def test_fleet_keys_take_a_restart(self) -> None:
        """A changed [fleet] key is named as needing a restart, and keeps its value."""
        self.reloader.apply(
            parse(INI.format(extra="[fleet]\nredis = redis://10.0.0.9:6379/0\n"))
        )
        warning = self.messages()[0]
        self.assertIn("[fleet] redis", warning)
        self.assertIn("takes a restart", warning)
        self.assertIsNone(self.reloader.config.fleet.redis)

    def test_readd_while_draining(self) -> None:
        """A backend put back before it drained is back in rotation."""
        b = self.registry.get("b")
        lease = self.registry.acquire(exclude=[self.registry.get("a")])
        assert lease is not None
        without_b = INI.format(extra="").replace(
            "[backend:b]\naddress = 127.0.0.1:9002\n", ""
        )
        self.reloader.apply(parse(without_b))
        self.reloader.apply(config())
        self.assertEqual(b.state, "healthy")
        lease.release()
        self.clock.advance(TICK)
        self.assertIs(self.registry.get("b"), b)


class RegistryMembershipTests(SynchronousTestCase):
    """L{Registry.add} and L{Registry.remove} keep the heap index exact."""

    def test_indexed_add_remove(self) -> None:
        """
        Above 16 backends (selection by heap), an added backend is picked
        and a removed one never is, exactly as a scan would pick.
        """
        clock = MemoryReactorClock()
        registry = Registry.from_config(
            config(
                "".join(
                    f"[backend:n{i}]\naddress = 127.0.0.1:{9100 + i}\n"
                    for i in range(20)
                )
            ),
            clock,
        )
        self.assertTrue(registry.selector.indexed)
        new = registry.add(
            config("[backend:z]\naddress = 127.0.0.1:9999").backends[2], "test"
        )
        leases = [registry.acquire() for _ in range(23)]
        self.assertEqual(
            sorted(lease.backend.name for lease in leases if lease),
            sorted(b.name for b in registry.backends),
        )
        registry.remove(new, "test")
        for lease in leases:
            assert lease is not None
            lease.release()
        self.assertNotIn(new, registry.backends)
        picked = {registry.acquire().backend.name for _ in range(100)}  # type: ignore[union-attr]
        self.assertNotIn("z", picked)
        self.assertEqual(new.active, 0)

    def test_add_existing_name(self) -> None:
        """Two backends never share a name."""
        registry = Registry.from_config(config(), MemoryReactorClock())
        self.assertRaises(ValueError, registry.add, config().backends[0], "test")

    def test_added_starts_at_current_virtual_time(self) -> None:
        """Round robin does not flood a new backend to catch it up."""
        registry = Registry.from_config(
            config(top="algorithm = round_robin"), MemoryReactorClock()
        )
        for _ in range(100):
            registry.acquire().release()  # type: ignore[union-attr]
        registry.add(
            config("[backend:c]\naddress = 127.0.0.1:9003").backends[2], "test"
        )
        names = [registry.acquire().backend.name for _ in range(30)]  # type: ignore[union-attr]
        self.assertEqual(names.count("c"), 10)


class SignalTests(SynchronousTestCase):
    def test_sighup_reloads_in_the_reactor(self) -> None:
        """
        The signal handler, installed once the reactor runs, only hands the
        reload to the reactor; stopping puts the previous handler back.
        """
        calls: list[Any] = []

        class FakeReactor:
            def callWhenRunning(self, f: Any) -> None:
                f()

            def callFromThread(self, f: Any) -> None:
                calls.append(f)

        class FakeReloader:
            def reload(self, path: str) -> bool:
                calls.append(path)
                return True

        previous = signal.getsignal(signal.SIGUSR2)
        service = ReloadOnSignal(
            FakeReloader(),  # type: ignore[arg-type]
            "/etc/txlb/lb.ini",
            FakeReactor(),
            signal.SIGUSR2,
        )
        service.startService()
        os.kill(os.getpid(), signal.SIGUSR2)
        self.assertEqual(len(calls), 1)
        calls.pop()()
        self.assertEqual(calls, ["/etc/txlb/lb.ini"])
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGUSR2), previous)


class ReloadQueueTests(SynchronousTestCase):
    """A reload applies max_connections, queue_size and queue_timeout."""

    setUp = ReloadTests.setUp
    messages = ReloadTests.messages

    def test_raised_max_connections_serves_waiters(self) -> None:
        """
        A backend's max_connections applies at once; raising it lets the
        oldest waiting requests in; nothing asks for a restart.
        """
        limit = "9001\nmax_connections = {}\n"
        base = INI.format(extra="").replace(
            "[backend:b]\naddress = 127.0.0.1:9002\n", ""
        )
        self.reloader.apply(parse(base.replace("9001\n", limit.format(1))))
        a = self.registry.get("a")
        self.assertEqual(a.max_connections, 1)
        held = self.registry.acquire()
        assert held is not None
        got: list[str] = []
        for _ in range(3):
            wait(
                self.registry,
                (),
                lambda lease: got.append(lease.backend.name),
                lambda: None,
            )
        self.reloader.apply(parse(base.replace("9001\n", limit.format(3))))
        self.clock.advance(0)
        self.assertEqual((got, a.active, len(self.registry.queue)), (["a", "a"], 3, 1))
        self.assertFalse(any("restart" in m for m in self.messages()))

    def test_queue_keys(self) -> None:
        """queue_size and queue_timeout apply to requests that wait from now on."""
        self.reloader.apply(
            config(top="listen = tcp:8080\nqueue_size = 7\nqueue_timeout = 1s")
        )
        self.assertEqual(
            (self.registry.queue.size, self.registry.queue.timeout), (7, 1.0)
        )
        self.assertFalse(any("restart" in m for m in self.messages()))
        self.reloader.apply(config())
        self.assertEqual(
            (self.registry.queue.size, self.registry.queue.timeout), (1024, 5.0)
        )
