"""
L{txlb.discovery.manager} with the reload (L{txlb.lifecycle.reload}):
SIGHUP keeps the discovered set and every backend's counts and state, and
the admin's backends; sections are started, restarted and stopped one by
one.  Also the discovery metrics.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.discovery.doubles import ScriptedSource
from txlb.config import BackendConfig, Config, DiscoveryConfig, parse
from txlb.core.registry import Registry
from txlb.discovery.manager import Discoveries
from txlb.discovery.metrics import DiscoveryCollector
from txlb.discovery.source import Answer, Found, IDiscoverySource
from txlb.lifecycle.reload import Reloader
from txlb.observe.metrics import Metrics
from txlb.schema import Address

WEB = "[discovery:web]\ntype = dns\nname = web.lb.test\nport = 8080\n"
API = "[discovery:api]\ntype = dns\nname = api.lb.test\nport = 9090\n"
STATIC = "[backend:s1]\naddress = 127.0.0.1:9001\n"


def found(*hosts: str) -> Answer:
    return Answer(
        tuple(Found(Address(h, 0)) for h in hosts), f"{len(hosts)} addresses", 5.0
    )


class ReloadDiscoveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.answers = {"web": found("10.0.0.1", "10.0.0.2"), "api": found("10.0.1.1")}
        self.sources: dict[str, ScriptedSource] = {}
        self.config = parse(STATIC + WEB + API, "lb.ini")
        self.registry = Registry.from_config(self.config, self.clock)
        self.discoveries = Discoveries(
            self.registry, self.clock, self.make, self.config.discoveries
        )
        self.discoveries.startService()
        self.reloader = Reloader(self.config, self.registry, self.discoveries)

    def make(self, config: DiscoveryConfig) -> IDiscoverySource:
        answer = self.answers[config.name]
        # Port from the section, as the real sources do.
        port = config.common.port
        answer = Answer(
            tuple(Found(Address(f.address.host, port)) for f in answer.found),
            answer.words,
            answer.ttl,
        )
        source = ScriptedSource(answer)
        self.sources[config.name] = source
        return source

    def names(self) -> list[str]:
        return [b.name for b in self.registry.backends]

    def test_started(self) -> None:
        self.assertEqual(
            self.names(),
            ["s1", "web-10.0.0.1-8080", "web-10.0.0.2-8080", "api-10.0.1.1-9090"],
        )

    def test_reload_keeps_discovered_and_admin_backends(self) -> None:
        """
        A reload of the same file keeps every discovered and admin backend,
        with its counts and state; no section is asked again early.
        """
        registry = self.registry
        admin = BackendConfig("extra", Address("127.0.0.1", 9500), source="admin")
        registry.add(admin, "added by admin from 127.0.0.1")
        web1 = registry.get("web-10.0.0.1-8080")
        leases = [registry.acquire() for _ in range(10)]
        web1.failures = 3
        registry.set_draining(registry.get("web-10.0.0.2-8080"), True, "admin")
        before = {
            b.name: (b.total_requests, b.active, b.state, b.failures, len(b.history))
            for b in registry.backends
        }
        lookups = {name: s.lookups for name, s in self.sources.items()}
        self.reloader.apply(parse(STATIC + WEB + API, "lb.ini"))
        after = {
            b.name: (b.total_requests, b.active, b.state, b.failures, len(b.history))
            for b in registry.backends
        }
        self.assertEqual(before, after)
        self.assertIn("extra", after)
        self.assertEqual({n: s.lookups for n, s in self.sources.items()}, lookups)
        self.assertTrue(all(lease is not None for lease in leases))

    def test_changed_section_keeps_set_until_answer(self) -> None:
        """A changed section is asked again at once; its new keys apply."""
        self.reloader.apply(parse(STATIC + WEB + "weight = 3\n" + API, "lb.ini"))
        web1 = self.registry.get("web-10.0.0.1-8080")
        self.assertEqual((web1.weight, web1.state), (3.0, "healthy"))
        self.assertEqual(len(self.discoveries.sections), 2)
        self.assertEqual(self.discoveries.sections[0].refreshes, 2)

    def test_changed_section_empty_answer_held(self) -> None:
        """A changed section answering empty keeps the old set for empty_hold."""
        self.answers["web"] = found()  # would be an empty answer: held
        self.reloader.apply(parse(STATIC + WEB + "empty_hold = 10s\n" + API, "lb.ini"))
        self.assertIn("web-10.0.0.1-8080", self.names())
        self.clock.advance(10)
        self.assertNotIn("web-10.0.0.1-8080", self.names())

    def test_removed_section_drains(self) -> None:
        """A section gone from the file drains its backends."""
        lease = self.registry.acquire(
            exclude=[b for b in self.registry.backends if b.source != "dns:api"]
        )
        assert lease is not None
        self.reloader.apply(parse(STATIC + WEB, "lb.ini"))
        api = self.registry.get("api-10.0.1.1-9090")
        self.assertEqual(api.state, "draining")
        self.assertEqual(
            api.history[-1].reason,
            "removed by reload: [discovery:api] removed: draining",
        )
        lease.release()
        self.assertEqual(self.names(), ["s1", "web-10.0.0.1-8080", "web-10.0.0.2-8080"])
        self.assertEqual([s.name for s in self.discoveries.sections], ["web"])
        asked = self.sources["api"].lookups
        self.clock.advance(60)
        self.assertEqual(self.sources["api"].lookups, asked)

    def test_added_section(self) -> None:
        self.reloader.apply(parse(WEB, "lb.ini"))
        self.answers["new"] = found("10.0.2.1")
        self.reloader.apply(
            parse(WEB + "[discovery:new]\ntype = dns\nname = n.lb.test\nport = 7\n")
        )
        self.assertIn("new-10.0.2.1-7", self.names())

    def test_stop(self) -> None:
        self.discoveries.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_metrics(self) -> None:
        """/metrics: refreshes, errors and backends by section; backends by source."""
        metrics = Metrics(self.registry)
        metrics.prometheus.register(DiscoveryCollector(self.registry, self.discoveries))
        self.clock.advance(5)
        body, _ = metrics.exposition(None)
        text = body.decode()
        for line in (
            'txlb_backends{source="static"} 1.0',
            'txlb_backends{source="dns:web"} 2.0',
            'txlb_backends{source="dns:api"} 1.0',
            'txlb_discovery_refreshes_total{source="dns:web"} 2.0',
            'txlb_discovery_errors_total{source="dns:web"} 0.0',
            'txlb_discovery_backends{source="dns:web"} 2.0',
            'txlb_discovery_up{source="dns:api"} 1.0',
            'txlb_discovery_last_refresh_timestamp_seconds{source="dns:web"} 5.0',
        ):
            self.assertIn(line, text)

    def test_status(self) -> None:
        status = self.discoveries.status()
        self.assertEqual([s["source"] for s in status], ["dns:web", "dns:api"])
        self.assertEqual(status[0]["found"], 2)


class ConfigCompare(SynchronousTestCase):
    def test_no_discovery_in_changed_keys(self) -> None:
        """Discovery sections are applied by reload, never 'need a restart'."""
        from txlb.lifecycle.reload import changed_keys

        old: Config = parse(WEB, "lb.ini")
        new: Config = parse(API, "lb.ini")
        self.assertEqual(changed_keys(old, new), [])
