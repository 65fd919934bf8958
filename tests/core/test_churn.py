"""
Backends that come and go at runtime (discovery, the admin API): the
registry's C{drain_timeout}, slow start for a backend that joins, one
warning per conflict, RFC 2782 priorities; and what the HTTP and TCP
proxies close on a backend dropped while still busy.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.core.test_membership import Listener, spec
from tests.support import Harness, registry_of
from txlb.config import HealthConfig
from txlb.core.conflicts import Conflicts
from txlb.core.registry import Registry

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class DrainTimeoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = registry_of(
            [spec("a", 1), spec("b", 2)], self.clock, drain_timeout=60.0
        )
        self.listener = Listener(self.registry)
        self.registry.subscribe(self.listener)

    def busy(self, name: str) -> Any:
        while True:
            lease = self.registry.acquire()
            assert lease is not None
            if lease.backend.name == name:
                return lease

    def test_default(self) -> None:
        """drain_timeout defaults to 5 minutes, AWS's deregistration delay."""
        registry = registry_of([spec("a", 1)], self.clock)
        self.assertEqual(registry.drain_timeout, 300.0)

    def test_busy_backend_dropped_after_drain_timeout(self) -> None:
        """
        A removed backend with a request in flight drains; after
        drain_timeout it is forgotten anyway, its listeners told, and the
        cause recorded.
        """
        b = self.registry.get("b")
        lease = self.busy("b")
        self.registry.remove(b, "gone from dns:web")
        self.assertEqual(b.state, "draining")
        self.clock.advance(59)
        self.assertIn(b, self.registry.backends)
        self.clock.advance(1)
        self.assertNotIn(b, self.registry.backends)
        self.assertEqual(self.listener.heard[-1], ("removed", "b", False))
        self.assertEqual(
            b.history[-1].reason,
            "still 1 in flight after drain_timeout 60s: closing them",
        )
        # The late release of the request cut off changes nothing.
        self.assertTrue(lease.release(failed=True))
        self.assertEqual([x.name for x in self.registry.backends], ["a"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_in_time_cancels_timer(self) -> None:
        """A backend that drains in time is forgotten at once, no timer left."""
        b = self.registry.get("b")
        lease = self.busy("b")
        self.registry.remove(b, "test")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        lease.release()
        self.assertNotIn(b, self.registry.backends)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_back_before_timeout_cancels_timer(self) -> None:
        """A backend its source names again stops draining and stays."""
        b = self.registry.get("b")
        self.busy("b")
        self.registry.remove(b, "test")
        self.registry.apply("static", [spec("a", 1), spec("b", 2)], "answer")
        self.assertEqual(b.state, "healthy")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(120)
        self.assertIn(b, self.registry.backends)

    def test_zero_waits_until_idle(self) -> None:
        """drain_timeout = 0: a busy backend stays until its last request ends."""
        registry = registry_of([spec("a", 1)], self.clock, drain_timeout=0.0)
        a = registry.get("a")
        lease = registry.acquire()
        assert lease is not None
        registry.remove(a, "test")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10_000)
        self.assertIn(a, registry.backends)
        lease.release()
        self.assertEqual(registry.backends, [])


class JoiningTests(SynchronousTestCase):
    """A backend added at runtime enters with initial_state and slow start."""

    def registry(self, **health: Any) -> Registry:
        self.clock = Clock()
        self.clock.advance(1000)
        slow = HealthConfig(slow_start=10.0, **health)
        return registry_of([spec("a", 1, health=slow)], self.clock)

    def test_configured_backends_start_whole(self) -> None:
        """The backends of the configuration at start-up take their whole weight."""
        registry = self.registry()
        self.assertEqual(registry.get("a").state, "healthy")
        self.assertEqual(registry.get("a").weight, 1.0)

    def test_joining_backend_ramps(self) -> None:
        """A backend found later ramps from 5% of its weight over slow_start."""
        registry = self.registry()
        slow = HealthConfig(slow_start=10.0)
        b = registry.add(spec("b", 2, "dns:web", weight=2.0, health=slow), "found")
        self.assertEqual(b.state, "starting")
        self.assertAlmostEqual(b.weight, 0.1)
        self.clock.advance(5)
        registry.acquire()
        self.assertAlmostEqual(b.weight, 1.0)
        self.clock.advance(5)
        registry.acquire()
        self.assertEqual((b.state, b.weight), ("healthy", 2.0))
        self.assertEqual(b.history[-1].reason, "slow start over after 10s")

    def test_unknown_joining_backend_ramps_after_first_probe(self) -> None:
        """With initial_state = unknown it waits for a probe, then ramps."""
        registry = self.registry(initial_state="unknown")
        slow = HealthConfig(slow_start=10.0, initial_state="unknown")
        b = registry.add(spec("b", 2, "admin", health=slow), "added by admin")
        self.assertEqual(b.state, "unknown")
        self.assertNotIn(b, registry.selector.available)
        registry.set_healthy(b, True, "1/2 good probes")
        self.assertEqual(b.state, "starting")
        self.assertAlmostEqual(b.weight, 0.05)

    def test_unknown_configured_backend_whole_after_first_probe(self) -> None:
        """At start-up, the first probe's verdict gives the whole weight."""
        registry = self.registry(initial_state="unknown")
        a = registry.get("a")
        registry.set_healthy(a, True, "1/2 good probes")
        self.assertEqual((a.state, a.weight), ("healthy", 1.0))


class ConflictTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        self.patch(Registry, "log", Logger(observer=self.events.append))
        self.patch(Conflicts, "log", Logger(observer=self.events.append))
        self.registry = registry_of([spec("a", 1)], self.clock)

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"].name == "warn"]

    def test_one_backend_one_warning(self) -> None:
        """
        Two sources naming one address: one backend, and one warning however
        often the second answers; told again if the conflict ends and returns.
        """
        twin = spec("web-127.0.0.1-1", 1, "dns:web")
        for _ in range(5):
            self.registry.apply("dns:web", [twin], "dns:web")
        self.assertEqual([b.name for b in self.registry.backends], ["a"])
        self.assertEqual(len(self.warnings()), 1)
        self.assertIn(
            "not added: a at 127.0.0.1:1 comes from static", self.warnings()[0]
        )
        self.registry.apply("dns:web", [], "dns:web")
        self.registry.apply("dns:web", [twin], "dns:web")
        self.assertEqual(len(self.warnings()), 2)

    def test_same_answer_twice_changes_nothing(self) -> None:
        """An answer equal to the last one records nothing and tells no one."""
        listener = Listener(self.registry)
        self.registry.subscribe(listener)
        found = [spec("w1", 5, "dns:web"), spec("w2", 6, "dns:web")]
        self.registry.apply("dns:web", found, "dns:web")
        before = (
            list(listener.heard),
            [list(b.history) for b in self.registry.backends],
        )
        self.registry.apply("dns:web", [attrs.evolve(s) for s in found], "dns:web")
        after = (
            list(listener.heard),
            [list(b.history) for b in self.registry.backends],
        )
        self.assertEqual(before, after)

    def test_weight_change_reweights_without_draining(self) -> None:
        """A new weight from a source applies at once; the backend never drains."""
        self.registry.apply("dns:web", [spec("w1", 5, "dns:web")], "dns:web")
        w1 = self.registry.get("w1")
        lease = self.registry.acquire(exclude=[self.registry.get("a")])
        assert lease is not None and lease.backend is w1
        self.registry.apply("dns:web", [spec("w1", 5, "dns:web", weight=4.0)], "srv")
        self.assertEqual((w1.state, w1.weight, w1.active), ("healthy", 4.0, 1))
        self.assertNotIn("draining", [t.state for t in w1.history])
        self.assertEqual(w1.history[-1].reason, "weight 1 -> 4: srv")


class PriorityTests(SynchronousTestCase):
    """
    RFC 2782: a lower priority (higher number) takes requests only while
    every backend of the better one is out of rotation (unhealthy, ejected
    or draining).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = registry_of(
            [
                spec("p0a", 1, priority=0),
                spec("p0b", 2, priority=0),
                spec("p1", 3, priority=1),
            ],
            self.clock,
        )

    def serving(self) -> list[str]:
        return sorted(b.name for b in self.registry.selector.available)

    def test_best_priority_only(self) -> None:
        self.assertEqual(self.serving(), ["p0a", "p0b"])
        for _ in range(10):
            lease = self.registry.acquire()
            assert lease is not None
            self.assertNotEqual(lease.backend.name, "p1")

    def test_lower_priority_while_better_unavailable(self) -> None:
        """Unhealthy, ejected and draining all count as unavailable."""
        registry = self.registry
        p0a, p0b = registry.get("p0a"), registry.get("p0b")
        registry.set_healthy(p0a, False, "probe")
        self.assertEqual(self.serving(), ["p0b"])
        registry.set_draining(p0b, True, "admin")
        self.assertEqual(self.serving(), ["p1"])
        lease = registry.acquire()
        assert lease is not None
        self.assertEqual(lease.backend.name, "p1")
        registry.set_draining(p0b, False, "admin")
        self.assertEqual(self.serving(), ["p0b"])
        p0b.ejected = True
        registry.set_healthy(p0b, True, "same")  # a no-op: rotation unchanged
        registry._changed(p0b, "ejected")
        self.assertEqual(self.serving(), ["p1"])

    def test_priority_change_rotates(self) -> None:
        """A new priority from the source applies at once."""
        self.registry.apply(
            "static",
            [
                spec("p0a", 1, priority=2),
                spec("p0b", 2, priority=2),
                spec("p1", 3, priority=1),
            ],
            "srv",
        )
        self.assertEqual(self.serving(), ["p1"])


class ClosedOnDropTests(SynchronousTestCase):
    """What is still on a backend dropped after drain_timeout is closed."""

    def test_http_request_in_flight_retried_elsewhere(self) -> None:
        """
        A GET in flight on a dropped backend (no answer yet) is cut off and,
        being replayable, retried on another backend: the client sees 200.
        """
        h = Harness(backends=2, extra="drain_timeout = 5s")
        client = h.client()
        client.send(GET)
        first = h.accept()
        b0 = h.registry.get("b0")
        self.assertEqual(b0.active, 1)
        h.registry.remove(b0, "gone from dns:web")
        h.reactor.advance(5)
        self.assertNotIn(b0, h.registry.backends)
        self.assertTrue(first.transport.disconnected)
        self.assertEqual(h.pending_connects(), [("127.0.0.1", 9002)])
        h.accept().reply(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(b0.active, 0)

    def test_http_idle_connections_closed_gracefully(self) -> None:
        """A backend that drained in time has its idle connections closed, not reset."""
        h = Harness(backends=2)
        client = h.client()
        client.send(GET)
        backend = h.accept()
        backend.reply(OK)
        b0 = h.registry.get("b0")
        self.assertEqual(b0.pool.idle, 1)
        h.registry.remove(b0, "test")
        self.assertTrue(backend.transport.disconnecting)
        self.assertFalse(getattr(backend.transport, "aborting", False))

    def test_tcp_relay_closed(self) -> None:
        """A TCP-mode connection still relayed to a dropped backend is closed."""
        h = Harness(backends=2, mode="tcp", extra="drain_timeout = 30s")
        client = h.client()
        backend = h.accept()
        other = h.client()
        h.accept()
        b0 = h.registry.get("b0")
        h.registry.remove(b0, "gone from ec2:app")
        h.reactor.advance(29)
        self.assertFalse(client.transport.disconnected)
        h.reactor.advance(1)
        self.assertTrue(client.transport.disconnected)
        self.assertTrue(backend.transport.disconnected)
        self.assertFalse(other.transport.disconnected)
        self.assertEqual(b0.active, 0)
