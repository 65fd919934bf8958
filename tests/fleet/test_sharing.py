"""
Tests for L{txlb.fleet.sharing}: nodes sharing one in-memory store
(L{tests.fleet.doubles.MemoryStore}) on one L{task.Clock}: what each
publishes and when, how peers' load and ejections reach the registry, how
a killed peer is forgotten, and the fall back to local counts and back.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.core.test_registry import fail, fill
from tests.fleet.doubles import MemoryStore
from tests.support import registry_of
from txlb.config import Address, BackendConfig, OutlierConfig
from txlb.core.registry import Lease, Registry
from txlb.fleet.metrics import FleetCollector
from txlb.fleet.sharing import LOCAL_ONLY, SHARING, Fleet
from txlb.fleet.store import Answer, IFleetStore
from txlb.fleet.wire import Report, decode, encode

INTERVAL = 0.1
TTL = 0.25


def backends(prefix: str, n: int = 3, **keys: Any) -> list[BackendConfig]:
    """C{n} backends named C{PREFIX0...} on 10.0.0.1:9000, 10.0.0.2:9000, ..."""
    return [
        BackendConfig(f"{prefix}{i}", Address(f"10.0.0.{i + 1}", 9000), **keys)
        for i in range(n)
    ]


class Node:
    """A registry and its fleet member, on the test's store and clock."""

    def __init__(
        self,
        store: MemoryStore,
        clock: Clock,
        name: str,
        configs: list[BackendConfig],
        **balancing: Any,
    ) -> None:
        outlier = balancing.pop("outlier", None)
        self.registry: Registry = registry_of(
            configs, clock, outlier=outlier, **balancing
        )
        self.fleet = Fleet(
            self.registry, store, name, INTERVAL, TTL, clock, instance=f"{name}-1"
        )
        self.leases: list[Lease] = []

    def start(self) -> Node:
        self.fleet.startService()
        return self

    def take(self, index: int, count: int = 1) -> None:
        """C{count} requests in flight on backend C{index}."""
        backend = self.registry.backends[index]
        others = [b for b in self.registry.backends if b is not backend]
        for _ in range(count):
            lease = self.registry.acquire(exclude=others)
            assert lease is not None and lease.backend is backend
            self.leases.append(lease)

    def peers(self) -> list[int]:
        return [b.peers for b in self.registry.backends]


class _Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = MemoryStore(self.clock)

    def node(self, name: str, prefix: str = "web", **keys: Any) -> Node:
        balancing = {
            k: keys.pop(k) for k in ("algorithm", "outlier", "queue_size") if k in keys
        }
        n = keys.pop("n", 3)
        return Node(
            self.store, self.clock, name, backends(prefix, n, **keys), **balancing
        )

    def advance(self, seconds: float, step: float = 0.01) -> None:
        """Let C{seconds} pass, C{step} at a time (no drift: exact targets)."""
        start = self.clock.seconds()
        steps = round(seconds / step)
        for i in range(1, steps + 1):
            self.clock.advance(start + seconds * i / steps - self.clock.seconds())


class PublishingTests(_Case):
    def test_store_interface(self) -> None:
        """The double provides the interface the Fleet is written against."""
        self.assertTrue(verifyObject(IFleetStore, self.store))

    def test_every_interval_never_per_request(self) -> None:
        """
        One exchange at start and one per interval; requests in between
        cost none.
        """
        a = self.node("lb-a").start()
        self.assertEqual(self.store.exchanges["lb-a"], 1)
        a.take(0, 50)
        for lease in a.leases:
            lease.release()
        self.assertEqual(self.store.exchanges["lb-a"], 1)
        self.advance(1.0)
        self.assertEqual(self.store.exchanges["lb-a"], 11)

    def test_report_by_address_of_own_load(self) -> None:
        """
        A node reports its own in-flight counts (workers' included, peers'
        not) by backend address, idle backends left out, and its own
        passive ejections only.
        """
        a = self.node("lb-a", outlier=OutlierConfig(consecutive_failures=2)).start()
        a.take(0, 2)
        a.registry.backends[0].siblings = 3
        a.registry.backends[1].peers = 9
        fail(a.registry, 2, 2, why="answered 502")
        a.registry.eject_by_peer(a.registry.backends[1], 5, "lb-b", "theirs")
        report = a.fleet.report()
        self.assertEqual(report.backends, {"10.0.0.1:9000": 5})
        self.assertEqual(report.load, 5)
        self.assertEqual(list(report.ejected), ["10.0.0.3:9000"])
        ejected = report.ejected["10.0.0.3:9000"]
        self.assertEqual(ejected.seconds, 30.0)
        self.assertIn("(last: answered 502)", ejected.cause)
        self.assertEqual(ejected.serial, 1)
        self.assertEqual(decode(encode(report)), report)

    def test_backends_coming_and_going_keep_memory_flat(self) -> None:
        """Backends replaced over and over (discovery) leave no trail behind."""
        a = self.node("lb-a").start()
        registry = a.registry
        for i in range(200):
            spec = BackendConfig(f"d{i}", Address(f"10.1.{i // 250}.{i % 250}", 80))
            registry.add(spec, "discovered")
            self.clock.advance(INTERVAL)
            registry.remove(registry.get(f"d{i}"), "gone")
        self.clock.advance(INTERVAL)
        self.assertEqual(len(registry.backends), 3)
        self.assertLessEqual(len(a.fleet._texts), 2 * 3 + 16)

    def test_slow_store_not_piled_up(self) -> None:
        """An exchange still unanswered holds the next ones back."""
        self.store.hold = True
        self.node("lb-a").start()
        self.advance(1.0)
        self.assertEqual(self.store.exchanges["lb-a"], 1)
        d, answer = self.store.held.pop()
        d.callback(answer)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.store.exchanges["lb-a"], 2)

    def test_store_raising_does_not_stop_the_loop(self) -> None:
        """A store that raises is a failed exchange; the next ones still run."""
        a = self.node("lb-a")
        calls: list[int] = []

        def broken(node: str, body: bytes, ttl: float) -> Deferred[Answer]:
            calls.append(1)
            raise RuntimeError("bug")

        self.patch(self.store, "exchange", broken)
        a.start()
        self.advance(0.3)
        self.assertEqual(len(calls), 4)
        self.assertEqual(a.fleet.status, LOCAL_ONLY)
        self.assertIn("bug", a.fleet.error or "")


class PeerLoadTests(_Case):
    def test_peers_load_by_address(self) -> None:
        """
        A peer's in-flight counts land on the backend of the same address,
        whatever its name there, and others = siblings + peers.
        """
        a = self.node("lb-a", prefix="web").start()
        b = self.node("lb-b", prefix="app").start()
        b.take(0, 3)
        b.take(2, 1)
        a.registry.backends[0].siblings = 2
        self.advance(2 * INTERVAL)
        self.assertEqual(a.peers(), [3, 0, 1])
        self.assertEqual([x.others for x in a.registry.backends], [5, 0, 1])
        # lb-a's workers' requests are lb-a's; lb-b's own are not its peers'.
        self.assertEqual(b.peers(), [2, 0, 0])

    def test_workers_hooks(self) -> None:
        """
        With worker processes the node reads their counts before each report
        (so it publishes what they have in flight now) and is told which
        backends' peers changed, to tell its workers; nothing when none did.
        """
        a = self.node("lb-a")
        b = self.node("lb-b").start()
        reads: list[float] = []
        told: list[list[str]] = []

        def read_workers() -> None:
            reads.append(self.clock.seconds())
            a.registry.backends[1].siblings = 4

        a.fleet.before_report = read_workers
        a.fleet.peers_changed = lambda changed: told.append([x.name for x in changed])
        a.start()
        b.take(2, 2)
        self.advance(2 * INTERVAL)
        self.assertTrue(reads)
        self.assertEqual(b.peers(), [0, 4, 0])
        self.assertEqual(told, [["web2"]])
        self.advance(3 * INTERVAL)
        self.assertEqual(told, [["web2"]])
        for lease in b.leases:
            lease.release()
        self.advance(2 * INTERVAL)
        self.assertEqual(told, [["web2"], ["web2"]])
        self.assertEqual(a.peers(), [0, 0, 0])

    def test_least_conn_judges_the_fleet(self) -> None:
        """A backend busy with a peer's requests is not picked by least_conn."""
        a = self.node("lb-a").start()
        b = self.node("lb-b").start()
        b.take(0, 4)
        b.take(1, 4)
        self.advance(2 * INTERVAL)
        picked = []
        for _ in range(4):
            lease = a.registry.acquire()
            assert lease is not None
            picked.append(lease.backend.name)
        self.assertEqual(picked, ["web2"] * 4)

    def test_index_kept_exact(self) -> None:
        """Above 16 backends (the heap) a peer's load re-keys the backend too."""
        a = self.node("lb-a", n=20).start()
        b = self.node("lb-b", n=20).start()
        self.assertTrue(a.registry.selector.indexed)
        for i in range(19):
            b.take(i)
        self.advance(2 * INTERVAL)
        lease = a.registry.acquire()
        assert lease is not None
        self.assertEqual(lease.backend.name, "web19")

    def test_max_connections_counts_peers(self) -> None:
        """
        max_connections holds across the fleet: a backend full with a peer's
        requests takes none here, and a request waiting for it gets it once
        the peer's load falls.
        """
        a = self.node("lb-a", n=1, max_connections=2).start()
        b = self.node("lb-b", n=1, max_connections=2).start()
        b.take(0, 2)
        self.advance(2 * INTERVAL)
        self.assertEqual(fill(a.registry), [])
        self.assertTrue(a.registry.full())
        leased: list[Lease] = []
        waiter = a.registry.queue.lease_or_wait(_Client(leased), ())
        self.assertIsNotNone(waiter)
        b.leases.pop().release()
        self.advance(2 * INTERVAL)
        self.assertEqual(len(leased), 1)
        self.assertEqual(a.registry.backends[0].load, 2)


class _Client:
    def __init__(self, leased: list[Lease]) -> None:
        self.leased_list = leased

    def leased(self, lease: Lease) -> None:
        self.leased_list.append(lease)

    def refused(self, refusal: Any) -> None:
        raise AssertionError(f"refused: {refusal}")


class ExpiryTests(_Case):
    def test_killed_peer_forgotten_within_ttl(self) -> None:
        """
        A peer that stops publishing (killed: no goodbye) is forgotten TTL
        after its last report, between this node's exchanges too: within
        three intervals of its death, whenever it died.
        """
        for offset in (0.0, 0.03, 0.07, 0.099):
            with self.subTest(offset=offset):
                self.setUp()
                a = self.node("lb-a").start()
                self.clock.advance(0.05)  # b reports between a's exchanges
                b = self.node("lb-b").start()
                b.take(1, 5)
                self.advance(0.5)
                self.assertEqual(a.peers(), [0, 5, 0])
                self.clock.advance(offset)
                last = self.store.entries["lb-b"][1] - TTL
                b.fleet._loop.stop()  # SIGKILL: no more reports, no leave
                killed = self.clock.seconds()
                self.advance(3 * INTERVAL, step=0.001)
                self.assertEqual(a.peers(), [0, 0, 0])
                (gone,) = a.fleet.departed
                self.assertEqual(gone.node, "lb-b")
                self.assertAlmostEqual(gone.time, last + TTL, delta=0.0011)
                self.assertLessEqual(gone.time - killed, 3 * INTERVAL)
                self.assertIn("expired", gone.why)

    def test_live_peer_never_expires(self) -> None:
        """A peer reporting every interval is never dropped, however long."""
        a = self.node("lb-a").start()
        self.clock.advance(0.037)
        b = self.node("lb-b").start()
        b.take(0, 1)
        self.advance(30.0)
        self.assertEqual(list(a.fleet.peers), ["lb-b"])
        self.assertEqual(list(a.fleet.departed), [])
        self.assertEqual(a.peers(), [1, 0, 0])

    def test_clean_stop_leaves_at_once(self) -> None:
        """A node that stops (SIGTERM, after its drain) removes its entry."""
        a = self.node("lb-a").start()
        b = self.node("lb-b").start()
        b.take(2, 2)
        self.advance(0.3)
        self.assertEqual(a.peers(), [0, 0, 2])
        b.fleet.stopService()
        self.assertNotIn("lb-b", self.store.entries)
        self.assertEqual(self.store.closed, 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(a.peers(), [0, 0, 0])
        self.assertIn("left the fleet", a.fleet.departed[0].why)


class LocalOnlyTests(_Case):
    def test_falls_back_once_and_rejoins_once(self) -> None:
        """
        Redis unreachable: peers' counts are dropped at once, the node says
        "local only" once however long it lasts; back, it says so once and
        counts its peers again.
        """
        a = self.node("lb-a").start()
        b = self.node("lb-b").start()
        b.take(0, 2)
        self.advance(0.3)
        self.assertEqual(a.fleet.status, SHARING)
        with capturedLogs() as events:
            self.store.down = True
            self.advance(5.0)
            self.assertEqual(a.fleet.status, LOCAL_ONLY)
            self.assertEqual(a.peers(), [0, 0, 0])
            self.assertEqual(a.fleet.peers, {})
            self.assertIn("refused", a.fleet.error or "")
            self.store.down = False
            self.advance(5.0)
        self.assertEqual(a.fleet.status, SHARING)
        self.assertEqual(a.peers(), [2, 0, 0])
        mine = [e for e in events if e.get("log_source") is a.fleet]
        said = [(e["log_level"], e["log_format"].split(":")[1]) for e in mine]
        self.assertEqual(
            said,
            [
                (LogLevel.warn, " local only"),
                (LogLevel.info, " {how} through {store} as node {node}"),
                (LogLevel.info, " peer {peer} joined"),
            ],
        )
        self.assertEqual(mine[1]["how"], "rejoined")
        self.assertEqual(a.fleet.failures, 50)

    def test_unreachable_from_the_start(self) -> None:
        """A store down at start-up: local only at once, said once."""
        self.store.down = True
        with capturedLogs() as events:
            a = self.node("lb-a").start()
            self.advance(1.0)
        warned = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warned), 1)
        self.assertEqual(a.fleet.status, LOCAL_ONLY)
        self.assertIsNotNone(a.registry.acquire())

    def test_unreadable_entry_skipped_and_said_once(self) -> None:
        """A peer entry that is not a report is not counted, and said once."""
        a = self.node("lb-a").start()
        with capturedLogs() as events:
            for _ in range(5):
                self.store.put("lb-x", b"{not json", TTL)
                self.clock.advance(INTERVAL)
        self.assertEqual(a.fleet.peers, {})
        warned = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warned), 1)
        self.assertEqual(warned[0]["peer"], "lb-x")
        self.assertIn("not JSON", warned[0]["why"])

    def test_two_processes_one_name_said_once(self) -> None:
        """Another process publishing under this node's name is an error, once."""
        a = self.node("lb-a").start()
        twin = encode(Report("lb-a", "other-run", 1, 0, TTL))
        with capturedLogs() as events:
            for _ in range(3):
                self.store.put("lb-a", twin, TTL)
                self.clock.advance(INTERVAL)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["other"], "other-run")
        self.assertEqual(a.fleet.peers, {})


class EjectionTests(_Case):
    def test_ejection_honoured_by_peers_for_its_time(self) -> None:
        """
        A backend one node ejects is ejected by its peers too, with the
        node's name and cause, until the first node's ejection ends; peers
        do not report it back as theirs.
        """
        outlier = OutlierConfig(consecutive_failures=3, base_ejection_time=10.0)
        a = self.node("lb-a", outlier=outlier).start()
        b = self.node("lb-b", prefix="app", outlier=outlier).start()
        self.advance(0.2)
        fail(b.registry, 1, 3, why="answered 500")
        ejected_at = self.clock.seconds()
        self.advance(0.2)
        web1 = a.registry.backends[1]
        self.assertEqual(web1.state, "ejected")
        self.assertEqual(
            web1.history[-1].reason,
            "ejected by peer lb-b: 3 consecutive failures (last: answered 500);"
            " ejected for 10s",
        )
        self.assertEqual(a.fleet.report().ejected, {})
        self.assertEqual(a.fleet.peer_ejections, 1)
        self.advance(10.0 - 0.2 - 0.1)
        self.assertEqual(web1.state, "ejected")
        self.advance(0.2)
        self.assertEqual(web1.state, "healthy")
        self.assertLess(web1.last_unejected - ejected_at, 10.0 + 0.02)
        self.assertEqual(
            [t.reason for t in web1.history].count("ejection time over"), 1
        )
        self.assertEqual(a.fleet.peer_ejections, 1)

    def test_ejection_reaches_a_late_joiner(self) -> None:
        """A node that joins during a peer's ejection ejects for what is left."""
        outlier = OutlierConfig(consecutive_failures=2, base_ejection_time=10.0)
        b = self.node("lb-b", outlier=outlier).start()
        fail(b.registry, 0, 2)
        self.advance(4.0)
        a = self.node("lb-a", outlier=outlier).start()
        self.assertEqual(a.registry.backends[0].state, "ejected")
        self.advance(5.9)
        self.assertEqual(a.registry.backends[0].state, "ejected")
        self.advance(0.2)
        self.assertEqual(a.registry.backends[0].state, "healthy")


class ViewTests(_Case):
    def test_snapshot(self) -> None:
        """
        The stats' fleet object: this node and each peer with its load, age
        and view of each backend, and per backend the fleet's total.
        """
        a = self.node("lb-a").start()
        b = self.node("lb-b", prefix="app").start()
        a.take(0, 1)
        b.take(0, 2)
        b.take(1, 1)
        self.advance(0.2)
        self.clock.advance(0.05)
        snap = a.fleet.snapshot()
        self.assertEqual(snap["status"], "sharing")
        self.assertEqual((snap["node"], snap["store"]), ("lb-a", "memory://fleet"))
        self.assertEqual((snap["interval"], snap["ttl"]), (INTERVAL, TTL))
        nodes = {n["node"]: n for n in snap["nodes"]}
        self.assertEqual(nodes["lb-a"]["load"], 1)
        self.assertTrue(nodes["lb-a"]["self"])
        self.assertEqual(
            nodes["lb-b"]["backends"], {"10.0.0.1:9000": 2, "10.0.0.2:9000": 1}
        )
        self.assertEqual(nodes["lb-b"]["load"], 3)
        self.assertAlmostEqual(nodes["lb-b"]["age"], 0.05, places=6)
        self.assertEqual(
            [(x["name"], x["local"], x["peers"], x["total"]) for x in snap["backends"]],
            [("web0", 1, 2, 3), ("web1", 0, 1, 1), ("web2", 0, 0, 0)],
        )

    def test_metrics(self) -> None:
        """The collector reports the fleet's state and per-backend peer load."""
        a = self.node("lb-a").start()
        b = self.node("lb-b").start()
        b.take(2, 4)
        self.advance(0.2)
        metrics = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in FleetCollector(a.fleet).collect()
            for s in family.samples
        }
        self.assertEqual(metrics[("txlb_fleet_up", ())], 1)
        self.assertEqual(metrics[("txlb_fleet_peers", ())], 1)
        self.assertEqual(
            metrics[("txlb_fleet_backend_peer_connections", (("backend", "web2"),))],
            4,
        )
        self.assertEqual(metrics[("txlb_fleet_node_load", (("node", "lb-b"),))], 4)
        self.assertEqual(metrics[("txlb_fleet_exchanges_total", ())], 3)
        self.store.down = True
        self.clock.advance(INTERVAL)
        up = next(iter(FleetCollector(a.fleet).collect()))
        self.assertEqual(up.samples[0].value, 0)
