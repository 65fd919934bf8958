"""
The one road for backend changes: L{Registry.apply}, L{Registry.add},
L{Registry.update} and L{Registry.remove}, and what listeners hear.
"""

from __future__ import annotations

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support import registry_of
from txlb.config import Address, BackendConfig, HealthConfig
from txlb.core.backend import Backend, Transition
from txlb.core.listeners import IBackendListener
from txlb.core.queue import ALL_FAILED, NONE_AVAILABLE, Refusal
from txlb.core.registry import MembershipError, Registry


def spec(name: str, port: int, source: str = "static", **kw: object) -> BackendConfig:
    return BackendConfig(name, Address("127.0.0.1", port), source=source, **kw)  # type: ignore[arg-type]


@implementer(IBackendListener)
class Listener:
    """Records what it hears, and whether the backend was in rotation then."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.heard: list[tuple[str, str, bool]] = []
        self.states: list[tuple[str, str, str]] = []

    def _in_rotation(self, backend: Backend) -> bool:
        return backend in self.registry.selector.available

    def backend_added(self, backend: Backend) -> None:
        self.heard.append(("added", backend.name, self._in_rotation(backend)))

    def backend_changed(self, backend: Backend, old: BackendConfig) -> None:
        self.heard.append(("changed", backend.name, old != backend.spec))

    def backend_removed(self, backend: Backend) -> None:
        self.heard.append(("removed", backend.name, self._in_rotation(backend)))

    def backend_state(self, backend: Backend, transition: Transition) -> None:
        self.states.append((backend.name, transition.state, transition.reason))


class MembershipTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = registry_of([spec("a", 1), spec("b", 2)], self.clock)
        self.listener = Listener(self.registry)
        verifyObject(IBackendListener, self.listener)
        self.registry.subscribe(self.listener)

    def names(self) -> list[str]:
        return [b.name for b in self.registry.backends]

    def test_subscribe_replays(self) -> None:
        """A new listener hears of every backend already there, in order."""
        self.assertEqual(
            self.listener.heard, [("added", "a", True), ("added", "b", True)]
        )

    def test_added_heard_before_rotation(self) -> None:
        """Listeners hear of a backend before it takes requests."""
        self.registry.add(spec("c", 3, "admin"), "added by test")
        self.assertEqual(self.listener.heard[-1], ("added", "c", False))
        self.assertIn(self.registry.get("c"), self.registry.selector.available)
        self.assertEqual(self.registry.get("c").history[-1].reason, "added by test")

    def test_name_or_address_taken(self) -> None:
        """Two backends never share a name or an address, whatever their source."""
        with self.assertRaises(MembershipError) as caught:
            self.registry.add(spec("a", 9), "test")
        self.assertIn("name is used by backend a (static)", str(caught.exception))
        with self.assertRaises(MembershipError) as caught:
            self.registry.add(spec("z", 2, "admin"), "test")
        self.assertIn("address 127.0.0.1:2", str(caught.exception))

    def test_apply_adds_updates_removes(self) -> None:
        """apply makes a source's backends exactly the specs given."""
        a = self.registry.get("a")
        lease = self.registry.acquire()
        assert lease is not None and lease.backend is a
        self.registry.apply("static", [spec("a", 1, weight=3), spec("c", 3)], "test")
        self.assertEqual(self.names(), ["a", "c"])  # b was idle: gone at once
        self.assertEqual((a.configured_weight, a.spec.weight), (3, 3))
        self.assertEqual(
            self.listener.heard[2:],
            [("removed", "b", False), ("changed", "a", True), ("added", "c", False)],
        )

    def test_state_changes_heard(self) -> None:
        """Every state change reaches the listeners with its cause."""
        a = self.registry.get("a")
        self.registry.set_healthy(a, False, "3/3 probes bad")
        self.registry.set_draining(a, True, "drained by test")
        self.assertEqual(
            self.listener.states,
            [
                ("a", "unhealthy", "3/3 probes bad"),
                ("a", "draining", "drained by test"),
            ],
        )

    def test_removed_drains_then_goes(self) -> None:
        """A removed backend with a request in flight drains, then is removed."""
        lease = self.registry.acquire()
        assert lease is not None
        a = lease.backend
        self.registry.apply("static", [spec("b", 2)], "test")
        self.assertEqual((a.state, a.leaving), ("draining", True))
        self.assertIn(a, self.registry.backends)
        self.assertEqual(self.registry.acquire().backend.name, "b")  # type: ignore[union-attr]
        lease.release()
        self.assertEqual(self.names(), ["b"])
        self.assertEqual(self.listener.heard[-1], ("removed", "a", False))

    def test_back_before_drained(self) -> None:
        """A backend named again before it drained returns, counts intact."""
        lease = self.registry.acquire()
        assert lease is not None
        a = lease.backend
        self.registry.apply("static", [spec("b", 2)], "test")
        self.registry.apply("static", [spec("a", 1), spec("b", 2)], "test")
        self.assertEqual((a.state, a.leaving, a.active), ("healthy", False, 1))
        self.assertIs(self.registry.get("a"), a)

    def test_other_sources_untouched(self) -> None:
        """apply for one source leaves another's backends alone, and does not
        take a name or address another source holds."""
        self.registry.add(spec("x", 7, "admin"), "test")
        self.registry.apply("static", [spec("x", 8), spec("y", 7)], "test")
        self.assertEqual(self.names(), ["x"])
        self.assertEqual(self.registry.get("x").source, "admin")

    def test_changed_settings_live(self) -> None:
        """A changed spec replaces the backend's, its counts kept."""
        a = self.registry.get("a")
        lease = self.registry.acquire()
        assert lease is not None
        health = HealthConfig(path="/ping")
        new = attrs.evolve(a.spec, health=health, max_connections=4)
        self.registry.update(a, new, "test")
        self.assertEqual(
            (a.spec.health.path, a.max_connections, a.active), ("/ping", 4, 1)
        )
        self.assertEqual(self.listener.heard[-1], ("changed", "a", True))


class Refusals:
    def __init__(self) -> None:
        self.refusals: list[Refusal] = []

    def leased(self, lease: object) -> None:
        raise AssertionError("no lease expected")

    def refused(self, refusal: Refusal) -> None:
        self.refusals.append(refusal)


class LeaseOrWaitTests(SynchronousTestCase):
    def test_refusals_say_why(self) -> None:
        """No backend at all is 503, none left to try is 502 (both modes)."""
        registry = registry_of([spec("a", 1)], Clock())
        client = Refusals()
        registry.set_healthy(registry.get("a"), False, "test")
        self.assertIsNone(registry.queue.lease_or_wait(client))
        registry.set_healthy(registry.get("a"), True, "test")
        self.assertIsNone(registry.queue.lease_or_wait(client, [registry.get("a")]))
        self.assertEqual(client.refusals, [NONE_AVAILABLE, ALL_FAILED])
        self.assertEqual([r.status for r in client.refusals], [503, 502])
