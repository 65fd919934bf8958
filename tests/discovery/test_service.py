"""
L{txlb.discovery.service}: one section's lookups on a task.Clock, its
answers applied to a real registry, failures and empty answers held.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.discovery.doubles import ScriptedSource, section
from txlb.core.registry import Registry
from txlb.discovery.service import LOOKUP_TIMEOUT, DiscoveryService, Schedule
from txlb.discovery.source import Answer, Found, IDiscoverySource, LookupFailed
from txlb.schema import Address

DNS = (
    "[discovery:web]\ntype = dns\nname = web.lb.test\nport = 8080\n"
    "min_interval = 1s\nmax_interval = 20s\nempty_hold = 30s\n"
)


def answer(
    *hosts: str, ttl: float = 5.0, weights: dict[str, float] | None = None
) -> Answer:
    weights = weights or {}
    return Answer(
        tuple(Found(Address(h, 8080), weights.get(h)) for h in hosts),
        f"web.lb.test: {len(hosts)} addresses, ttl {ttl:g}s",
        ttl,
    )


EMPTY = Answer((), "web.lb.test: NXDOMAIN")


class ServiceTests(SynchronousTestCase):
    def start(self, *script: Answer | Exception, text: str = DNS) -> DiscoveryService:
        self.clock = Clock()
        self.clock.advance(1000)
        config, discovery = section(text)
        self.registry = Registry.from_config(config, self.clock)
        self.source = ScriptedSource(*script)
        verifyObject(IDiscoverySource, self.source)
        self.events: list[dict[str, Any]] = []
        self.patch(DiscoveryService, "log", Logger(observer=self.events.append))
        self.service = DiscoveryService(
            discovery, self.source, self.registry, self.clock, jitter=lambda: 1.0
        )
        self.service.startService()
        return self.service

    def names(self) -> list[str]:
        return [b.name for b in self.registry.backends]

    def states(self) -> dict[str, str]:
        return {b.name: b.state for b in self.registry.backends}

    def logged(self, level: str = "warn") -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"].name == level]

    def test_answer_applied(self) -> None:
        """The first answer, asked at start, becomes the section's backends."""
        self.start(answer("10.0.0.1", "10.0.0.2"))
        self.assertEqual(self.names(), ["web-10.0.0.1-8080", "web-10.0.0.2-8080"])
        backend = self.registry.get("web-10.0.0.1-8080")
        self.assertEqual(backend.source, "dns:web")
        self.assertEqual(backend.address, Address("10.0.0.1", 8080))
        self.assertEqual(
            backend.history[0].reason,
            "added by dns:web (web.lb.test: 2 addresses, ttl 5s)",
        )

    def test_ttl_clamped(self) -> None:
        """The next lookup comes when the TTL runs out, within min/max_interval."""
        for ttl, expected in ((5.0, 5.0), (0.0, 1.0), (300.0, 20.0)):
            self.start(answer("10.0.0.1", ttl=ttl))
            self.assertEqual(self.service.next_refresh, 1000 + expected)
            self.clock.advance(expected - 0.01)
            self.assertEqual(self.source.lookups, 1)
            self.clock.advance(0.01)
            self.assertEqual(self.source.lookups, 2)
            self.service.stopService()

    def test_gone_drains_then_removed(self) -> None:
        """A backend gone from the answer drains, and goes when idle."""
        self.start(answer("10.0.0.1", "10.0.0.2"), answer("10.0.0.1"))
        lease = self.registry.acquire()
        assert lease is not None
        busy = lease.backend.name
        self.assertEqual(busy, "web-10.0.0.1-8080")
        self.source.script = [answer("10.0.0.2")]
        self.clock.advance(5)
        self.assertEqual(self.states()[busy], "draining")
        self.assertEqual(
            self.registry.get(busy).history[-1].reason,
            "removed by dns:web (web.lb.test: 1 addresses, ttl 5s): draining",
        )
        lease.release()
        self.assertEqual(self.names(), ["web-10.0.0.2-8080"])

    def test_same_answer_changes_nothing(self) -> None:
        """Ten identical answers leave one history entry per backend."""
        self.start(answer("10.0.0.1", "10.0.0.2"))
        self.clock.pump([5.0] * 10)
        self.assertEqual(self.source.lookups, 11)
        self.assertEqual([len(b.history) for b in self.registry.backends], [1, 1])

    def test_failure_keeps_set_logs_once_and_backs_off(self) -> None:
        """
        Failed lookups keep the last set, say so once, retry after 1, 2, 4,
        8, 16, 20, 20 s (doubling from min_interval up to max_interval), and
        recovery is said once.
        """
        self.start(answer("10.0.0.1"), LookupFailed("web.lb.test: SERVFAIL"))
        self.clock.advance(5)  # the second lookup fails
        waits = []
        for _ in range(6):
            assert self.service.next_refresh is not None
            wait = self.service.next_refresh - self.clock.seconds()
            waits.append(wait)
            self.clock.advance(wait)
        self.assertEqual(waits, [1.0, 2.0, 4.0, 8.0, 16.0, 20.0])
        self.assertEqual(self.names(), ["web-10.0.0.1-8080"])
        self.assertEqual(self.states(), {"web-10.0.0.1-8080": "healthy"})
        warnings = self.logged()
        self.assertEqual(len(warnings), 1)
        self.assertIn(
            "lookup of A/AAAA web.lb.test via 127.0.0.1:53 failed", warnings[0]
        )
        self.assertIn("(web.lb.test: SERVFAIL); its 1 backends stay", warnings[0])
        status = self.service.status()
        self.assertEqual((status["state"], status["errors"]), ("failing", 7))
        self.assertEqual(status["last_error"], "web.lb.test: SERVFAIL")
        self.source.script = [answer("10.0.0.1", "10.0.0.3")]
        self.clock.advance(20)
        self.assertEqual(len(self.names()), 2)
        self.assertEqual(self.service.status()["state"], "ok")
        infos = [m for m in self.logged("info") if "answers again" in m]
        self.assertEqual(len(infos), 1)
        self.assertIn("after 7 failed lookups", infos[0])

    def test_jitter(self) -> None:
        """Retries wait between half and all of the backoff."""
        schedule = Schedule(1.0, 20.0, None, 1.0, 20.0)
        self.assertEqual(schedule.retry(3, 0.0), 2.0)
        self.assertEqual(schedule.retry(3, 1.0), 4.0)
        self.assertEqual(schedule.retry(30, 1.0), 20.0)

    def test_ec2_schedule(self) -> None:
        """EC2: every interval; retries from 1 s to four intervals."""
        _, ec2 = section(
            "[discovery:app]\ntype = ec2\nregion = eu-west-1\ntags = a=b\n"
            "port = 80\ninterval = 15s\n"
        )
        schedule = Schedule.of(ec2)
        self.assertEqual(schedule.refresh(3.0), 15.0)
        self.assertEqual([schedule.retry(n, 1.0) for n in (1, 2, 7, 8)], [1, 2, 60, 60])

    def test_failure_first_leaves_empty(self) -> None:
        """A section whose first lookup fails has nothing yet, and keeps asking."""
        self.start(RuntimeError("connection refused"), answer("10.0.0.1"))
        self.assertEqual(self.names(), [])
        self.assertEqual(
            self.service.status()["last_error"], "RuntimeError: connection refused"
        )
        self.clock.advance(1)
        self.assertEqual(self.names(), ["web-10.0.0.1-8080"])

    def test_hung_lookup_times_out(self) -> None:
        """A lookup that never ends counts as failed after LOOKUP_TIMEOUT."""
        self.start(answer("10.0.0.1"))
        self.source.lookup = lambda: Deferred()  # type: ignore[method-assign]
        self.clock.advance(5)
        self.clock.advance(LOOKUP_TIMEOUT)
        self.assertEqual(self.service.status()["last_error"], "no answer in 60s")
        self.assertEqual(self.names(), ["web-10.0.0.1-8080"])

    def test_empty_answer_held(self) -> None:
        """
        NXDOMAIN keeps the set for empty_hold (30 s), said once; then the
        set drains, its cause naming the wait.
        """
        self.start(answer("10.0.0.1", "10.0.0.2"), EMPTY)
        self.clock.advance(5)
        self.assertEqual(self.service.status()["state"], "empty")
        self.clock.pump([1.0] * 29)
        self.assertEqual(set(self.states().values()), {"healthy"})
        self.assertEqual(len(self.logged()), 1)
        self.assertIn("answered empty (web.lb.test: NXDOMAIN)", self.logged()[0])
        self.clock.advance(1)
        self.assertEqual(self.names(), [])
        self.assertEqual(len(self.logged()), 2)
        self.assertIn(
            "still empty after 30s: draining its 2 backends", self.logged()[1]
        )

    def test_empty_then_back_within_hold(self) -> None:
        """An empty answer followed by a full one within empty_hold changes nothing."""
        self.start(answer("10.0.0.1"), EMPTY, answer("10.0.0.1"))
        self.clock.pump([5.0, 1.0])
        self.assertEqual(self.states(), {"web-10.0.0.1-8080": "healthy"})
        self.assertEqual(len(self.registry.get("web-10.0.0.1-8080").history), 1)
        self.assertIsNone(self.service.status()["empty_since"])

    def test_zero_hold_empties_at_once(self) -> None:
        self.start(
            answer("10.0.0.1"),
            EMPTY,
            text=DNS.replace("empty_hold = 30s", "empty_hold = 0"),
        )
        self.clock.advance(5)
        self.assertEqual(self.names(), [])

    def test_weights_from_answer(self) -> None:
        """A weight in the answer (SRV) is the backend's; a change re-weights."""
        text = "[discovery:web]\ntype = dns\nname = _web._tcp.lb.test\n"
        self.start(answer("10.0.0.1", weights={"10.0.0.1": 3.0}), text=text)
        backend = self.registry.get("web-10.0.0.1-8080")
        self.assertEqual(backend.weight, 3.0)
        self.source.script = [answer("10.0.0.1", weights={"10.0.0.1": 6.0})]
        self.clock.advance(5)
        self.assertEqual((backend.weight, backend.state), (6.0, "healthy"))

    def test_section_keys_applied(self) -> None:
        """The section's per-backend keys go to each backend found."""
        self.start(answer("10.0.0.1"), text=DNS + "weight = 4\nmax_connections = 9\n")
        backend = self.registry.get("web-10.0.0.1-8080")
        self.assertEqual((backend.weight, backend.max_connections), (4.0, 9))

    def test_stop_cancels(self) -> None:
        """Stopped: no timer left; an answer that comes later is ignored."""
        self.start(answer("10.0.0.1"))
        pending: Deferred[Answer] = Deferred()
        self.source.lookup = lambda: pending  # type: ignore[method-assign]
        self.clock.advance(5)
        self.service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        pending.callback(answer("10.0.0.9"))
        self.assertEqual(self.names(), ["web-10.0.0.1-8080"])

    def test_status(self) -> None:
        self.start(answer("10.0.0.1"))
        status = self.service.status()
        self.assertEqual(
            {k: status[k] for k in ("name", "type", "source", "state", "found")},
            {
                "name": "web",
                "type": "dns",
                "source": "dns:web",
                "state": "ok",
                "found": 1,
            },
        )
        self.assertEqual(status["backends"], ["web-10.0.0.1-8080"])
        self.assertEqual(status["answer"], "web.lb.test: 1 addresses, ttl 5s")
        self.assertEqual((status["last_refresh"], status["next_refresh"]), (1000, 1005))
