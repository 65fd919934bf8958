"""
One node of a fleet: every C{interval} it publishes its per-backend load
and its own passive ejections to the store (L{txlb.fleet.store}) and reads
its peers', sets each backend's C{peers} (and C{others}) from them, and
honours their ejections.  Never on a request's path.

A peer is counted until its entry expires: the store says how long each
entry has left, and the node forgets the peer at that moment by its own
clock, between exchanges too, so a killed peer is forgotten within the TTL
(L{txlb.fleet.settings.TTL_INTERVALS}) of its last report.  When the store
cannot be reached the node balances on its own counts alone (status
C{local only}, said once in the log) and rejoins at the first exchange that
succeeds (said once too).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from txlb.config import Address
from txlb.core.backend import Backend
from txlb.core.registry import Registry
from txlb.fleet.store import Answer, IFleetStore, StoreError
from txlb.fleet.wire import Ejected, Report, decode, encode

__all__ = ["CONNECTING", "LOCAL_ONLY", "SHARING", "Departure", "Fleet", "Peer"]

CONNECTING = "connecting"
SHARING = "sharing"
LOCAL_ONLY = "local only"
DEPARTURES = 10
"""The latest departures kept for the stats."""
_SLACK = 1e-6


@attrs.frozen
class Peer:
    """
    Another node, as its last report read said.

    @ivar seen: when it was read (this node's clock).
    @ivar expires: when its entry expires (this node's clock).
    """

    report: Report
    seen: float
    expires: float


@attrs.frozen
class Departure:
    """A peer no longer counted: when, why, and when it was last read."""

    node: str
    time: float
    why: str
    seen: float


class Fleet(Service):
    """
    This node's part in the fleet, over one registry.

    @ivar status: L{CONNECTING}, L{SHARING} or L{LOCAL_ONLY}.
    @ivar peers: the live peers, by node name.
    """

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        store: IFleetStore,
        node: str,
        interval: float,
        ttl: float,
        clock: IReactorTime,
        instance: str | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.node = node
        self.interval = interval
        self.ttl = ttl
        self.instance = instance or uuid.uuid4().hex[:12]
        self._clock = clock
        self.status = CONNECTING
        self.since = clock.seconds()
        self.error: str | None = None
        self.peers: dict[str, Peer] = {}
        self.departed: deque[Departure] = deque(maxlen=DEPARTURES)
        self.exchanges = 0
        self.failures = 0
        self.peer_ejections = 0
        self._seq = 0
        self._pending = False
        self._expiry: IDelayedCall | None = None
        self._honoured: set[tuple[str, str, int]] = set()
        self._unreadable: set[str] = set()
        self._twin: str | None = None
        self._texts: dict[Address, str] = {}
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock
        # With worker processes (txlb.workers): their counts read into the
        # registry before each report, and the peers' counts told to them.
        self.before_report: Callable[[], None] | None = None
        self.peers_changed: Callable[[list[Backend]], None] | None = None

    # --- the service ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> Deferred[None]:
        """Stop publishing and remove this node's entry, so peers stop at once."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        self._cancel_expiry()
        d = self.store.leave(self.node)
        d.addTimeout(self.ttl, self._clock)
        d.addErrback(lambda _: None)
        d.addBoth(lambda _: self.store.close())
        return d

    # --- each interval ----------------------------------------------------------------

    def tick(self) -> None:
        """Publish and read, unless the last exchange is still unanswered."""
        if self._pending:
            return
        self._pending = True
        # Nothing may escape: a LoopingCall stops for good after an error.
        d = maybeDeferred(
            lambda: self.store.exchange(self.node, encode(self.report()), self.ttl)
        )
        d.addCallbacks(self._answered, self._failed)
        d.addErrback(lambda f: self.log.failure("fleet: exchange not handled", f))
        d.addBoth(self._done)

    def _done(self, _: Any) -> None:
        self._pending = False

    def report(self) -> Report:
        """What this node says of itself now (its own load: workers', not peers')."""
        self._seq += 1
        return self._measure(self._seq)

    def _measure(self, seq: int) -> Report:
        if self.before_report is not None:
            self.before_report()
        now = self._clock.seconds()
        backends: dict[str, int] = {}
        ejected: dict[str, Ejected] = {}
        load = 0
        for b in self.registry.backends:
            here = b.active + b.siblings
            if here:
                backends[self._text(b.address)] = here
                load += here
            ejection = b.ejection
            if ejection is not None and not ejection.by and ejection.until > now:
                ejected[self._text(b.address)] = Ejected(
                    ejection.until - now, ejection.cause, b.ejections
                )
        return Report(self.node, self.instance, seq, load, self.ttl, backends, ejected)

    def _answered(self, answer: Answer) -> None:
        now = self._clock.seconds()
        self.exchanges += 1
        self._check_twin(answer.before)
        found: dict[str, Peer] = {}
        for entry in answer.entries:
            try:
                report = decode(entry.body)
                if report.node != entry.node:
                    raise ValueError(f"it names node {report.node!r}")
            except ValueError as e:
                if entry.node not in self._unreadable:
                    self._unreadable.add(entry.node)
                    self.log.warn(
                        "fleet: peer {peer}'s entry is unreadable, so it is not"
                        " counted: {why}",
                        peer=entry.node,
                        why=str(e),
                    )
                continue
            self._unreadable.discard(entry.node)
            found[entry.node] = Peer(report, now, now + entry.ttl)
        if self.status != SHARING:
            self.log.info(
                "fleet: {how} through {store} as node {node}: {count} peers",
                how="sharing" if self.status == CONNECTING else "rejoined",
                store=self.store.where,
                node=self.node,
                count=len(found),
            )
            self._set_status(SHARING, None, now)
        for node in sorted(found.keys() - self.peers.keys()):
            self.log.info("fleet: peer {peer} joined", peer=node)
        for node in self.peers:
            if node not in found:
                self._depart(
                    node,
                    now,
                    "left the fleet (it removed its entry)",
                    self.peers[node].seen,
                )
        self.peers = found
        self._apply()
        self._schedule_expiry(now)

    def _failed(self, failure: Failure) -> None:
        self.failures += 1
        why = str(failure.value) if failure.check(StoreError) else repr(failure.value)
        self.error = why
        if self.status == LOCAL_ONLY:
            return
        self.log.warn(
            "fleet: local only: {store} is unreachable ({why}); balancing on"
            " this node's own counts until it is back",
            store=self.store.where,
            why=why,
        )
        self._set_status(LOCAL_ONLY, why, self._clock.seconds())
        self.peers = {}
        self._cancel_expiry()
        self._apply()

    def _set_status(self, status: str, error: str | None, now: float) -> None:
        self.status = status
        self.error = error
        self.since = now

    def _check_twin(self, before: bytes | None) -> None:
        """Another process writing under this node's name is said once."""
        if before is None:
            return
        try:
            other = decode(before).instance
        except ValueError:
            return
        if other != self.instance and other != self._twin:
            self._twin = other
            self.log.error(
                "fleet: another balancer publishes as node {node} too (instance"
                " {other}; this one is {instance}): give each node its own name",
                node=self.node,
                other=other,
                instance=self.instance,
            )

    # --- peers' word into the registry ------------------------------------------------

    def _apply(self) -> None:
        """Set each backend's C{peers} from the live peers; honour their ejections."""
        counts: dict[str, int] = {}
        for peer in self.peers.values():
            for address, n in peer.report.backends.items():
                counts[address] = counts.get(address, 0) + n
        registry = self.registry
        by_address: dict[str, Backend] = {}
        fell = False
        changed = []
        for b in registry.backends:
            text = self._text(b.address)
            by_address[text] = b
            n = counts.get(text, 0)
            if b.peers != n:
                fell = fell or n < b.peers
                b.peers = n
                b.others = b.siblings + n
                registry.selector.touch(b)
                changed.append(b)
        if fell:
            registry.queue.serve_soon()
        if changed and self.peers_changed is not None:
            self.peers_changed(changed)
        if len(self._texts) > 2 * len(by_address) + 16:
            # Backends come and go (discovery): keep the texts of those here.
            self._texts = {b.address: t for t, b in by_address.items()}
        self._honour(by_address)

    def _honour(self, by_address: dict[str, Backend]) -> None:
        """
        Eject on a peer's word once per ejection of theirs, for the time it
        has left; a backend ejected here already is tried again next time.
        """
        live = set()
        for node, peer in self.peers.items():
            for address, ejected in peer.report.ejected.items():
                key = (node, address, ejected.serial)
                live.add(key)
                backend = by_address.get(address)
                if key in self._honoured or backend is None or backend.ejected:
                    continue
                self._honoured.add(key)
                # Its time left when the report was written, less the
                # report's age (the TTL it was written with, less what is left).
                left = ejected.seconds - (peer.report.ttl - (peer.expires - peer.seen))
                if left > self.interval and self.registry.eject_by_peer(
                    backend, left, node, ejected.cause
                ):
                    self.peer_ejections += 1
        self._honoured &= live

    # --- expiry -----------------------------------------------------------------------

    def _schedule_expiry(self, now: float) -> None:
        self._cancel_expiry()
        if self.peers:
            soonest = min(p.expires for p in self.peers.values())
            self._expiry = self._clock.callLater(max(0.0, soonest - now), self._expire)

    def _cancel_expiry(self) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None

    def _expire(self) -> None:
        self._expiry = None
        now = self._clock.seconds()
        gone = [n for n, p in self.peers.items() if p.expires <= now + _SLACK]
        for node in gone:
            peer = self.peers.pop(node)
            self._depart(
                node, now, f"expired: no report for {self.ttl:g}s (TTL)", peer.seen
            )
        if gone:
            self._apply()
        self._schedule_expiry(now)

    def _depart(self, node: str, now: float, why: str, seen: float) -> None:
        self.departed.append(Departure(node, now, why, seen))
        self.log.info("fleet: peer {peer} {why}", peer=node, why=why)

    def _text(self, address: Address) -> str:
        text = self._texts.get(address)
        if text is None:
            text = self._texts[address] = str(address)
        return text

    # --- what the stats show ----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The fleet as C{/api/server-stats} shows it (its C{fleet} object)."""
        now = self._clock.seconds()
        mine = self._measure(self._seq)
        nodes = [
            {
                "node": self.node,
                "self": True,
                "load": mine.load,
                "last_seen": now,
                "age": 0.0,
                "backends": dict(mine.backends),
                "ejected": _ejections(mine),
            }
        ]
        for name in sorted(self.peers):
            peer = self.peers[name]
            nodes.append(
                {
                    "node": name,
                    "self": False,
                    "load": peer.report.load,
                    "last_seen": peer.seen,
                    "age": round(now - peer.seen, 3),
                    "expires_in": round(max(0.0, peer.expires - now), 3),
                    "backends": dict(peer.report.backends),
                    "ejected": _ejections(peer.report),
                }
            )
        backends = []
        for b in self.registry.backends:
            here = b.active + b.siblings
            ejection = b.ejection
            backends.append(
                {
                    "name": b.name,
                    "address": self._text(b.address),
                    "local": here,
                    "peers": b.peers,
                    "total": here + b.peers,
                    "ejected_by": (ejection.by or self.node) if ejection else None,
                }
            )
        return {
            "node": self.node,
            "store": self.store.where,
            "interval": self.interval,
            "ttl": self.ttl,
            "status": self.status,
            "since": self.since,
            "error": self.error,
            "exchanges": self.exchanges,
            "failures": self.failures,
            "peer_ejections": self.peer_ejections,
            "nodes": nodes,
            "backends": backends,
            "departed": [
                {"node": d.node, "time": d.time, "why": d.why, "last_seen": d.seen}
                for d in self.departed
            ],
        }


def _ejections(report: Report) -> dict[str, dict[str, Any]]:
    return {
        address: {"seconds": round(e.seconds, 3), "cause": e.cause}
        for address, e in report.ejected.items()
    }
