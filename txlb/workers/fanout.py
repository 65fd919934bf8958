"""
The supervisor's registry, told to every worker: L{Fanout} listens to the
registry (the one road for backend changes: lb.ini, discovery, the admin
API) and says each membership and state change to each worker, gives each
backend a slot in the shared counts and, with C{max_connections}, its
permits; and it reads the shared counts back into the supervisor's backends
(C{siblings}, C{total_requests}) so the stats, the metrics and the drain of
removed backends see the whole balancer.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator

from twisted.logger import Logger
from twisted.protocols import amp
from zope.interface import implementer

from txlb.config import BackendConfig
from txlb.core.backend import Backend, Transition
from txlb.core.listeners import BackendListener, IBackendListener
from txlb.core.registry import Registry
from txlb.workers import protocol as commands
from txlb.workers.shm import Counts, Permits

__all__ = ["Fanout"]


@implementer(IBackendListener)
class Fanout(BackendListener):
    """
    Tells the workers of every change (see the module docstring).

    @ivar slots: the backend in each slot of the shared counts.
    """

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        counts: Counts,
        links: Callable[[], Iterator[amp.AMP]],
    ) -> None:
        self._registry = registry
        self._counts = counts
        self._links = links
        self.slots: dict[int, Backend] = {}
        self._permits: dict[int, Permits] = {}
        # Permits a lowered max_connections still has to take back.
        self._debt: dict[int, int] = {}
        self._next = 0

    # --- IBackendListener ---------------------------------------------------------

    def backend_added(self, backend: Backend) -> None:
        slot = self._allocate()
        backend.slot = slot
        self.slots[slot] = backend
        if backend.max_connections:
            self._permits[slot] = Permits.create(backend.max_connections)
        for link in self._links():
            self.introduce(link, backend)

    def backend_changed(self, backend: Backend, old: BackendConfig) -> None:
        for link in self._links():
            link.callRemote(
                commands.Changed,
                slot=backend.slot,
                spec=commands.spec_to_json(backend.spec),
            )
        if backend.max_connections != old.max_connections:
            self._limit_changed(backend, old.max_connections)

    def backend_removed(self, backend: Backend) -> None:
        slot = backend.slot
        for link in self._links():
            link.callRemote(commands.Removed, slot=slot)
        self.slots.pop(slot, None)
        self._debt.pop(slot, None)
        permits = self._permits.pop(slot, None)
        if permits is not None:
            permits.close()

    def backend_state(self, backend: Backend, transition: Transition) -> None:
        state = self._state(backend, transition.reason)
        for link in self._links():
            link.callRemote(commands.State, slot=backend.slot, state=state)

    # --- workers ------------------------------------------------------------------

    def introduce(self, link: amp.AMP, backend: Backend) -> None:
        """Tell one worker of one backend: its slot, configuration, state, permits."""
        last = backend.history[-1].reason if backend.history else ""
        link.callRemote(
            commands.Added,
            slot=backend.slot,
            spec=commands.spec_to_json(backend.spec),
            state=self._state(backend, last),
        )
        permits = self._permits.get(backend.slot)
        if permits is not None:
            link.callRemote(commands.Permit, slot=backend.slot, fd=permits.fd)

    def replay(self, link: amp.AMP) -> None:
        """Tell a worker that just said hello of every backend."""
        for backend in self._registry.backends:
            self.introduce(link, backend)
        self._send_peers([link], [b for b in self._registry.backends if b.peers])

    def peers_changed(self, backends: list[Backend]) -> None:
        """The fleet's peers' load on C{backends} changed: tell every worker."""
        self._send_peers(list(self._links()), backends)

    def _send_peers(self, links: list[amp.AMP], backends: list[Backend]) -> None:
        pairs = array("q")
        for b in backends:
            if b.slot >= 0:
                pairs.extend((b.slot, b.peers))
        if pairs:
            for link in links:
                link.callRemote(commands.Peers, counts=pairs.tobytes())

    def worker_gone(self, worker: int) -> None:
        """
        A worker died: its leases died with it.  Give back the permits they
        held and zero its cells, so no lease leaks.
        """
        held = self._counts.column(worker, self.slots)
        for slot, count in held.items():
            permits = self._permits.get(slot)
            if permits is not None:
                permits.give(count)
        self._counts.clear(worker)
        self.refresh()

    def backend(self, slot: int) -> Backend | None:
        return self.slots.get(slot)

    # --- the shared counts, read back -------------------------------------------

    def refresh(self) -> None:
        """
        The whole balancer's counts into the supervisor's backends, the
        debts of lowered limits paid where permits came back, and removed
        backends forgotten once nothing is in flight on them anywhere.
        """
        counts = self._counts
        for slot, backend in self.slots.items():
            siblings = counts.in_flight(slot)
            backend.siblings = siblings
            backend.others = siblings + backend.peers
            backend.total_requests = counts.sent(slot)
        for slot, debt in list(self._debt.items()):
            taken = self._permits[slot].take_up_to(debt)
            if taken == debt:
                del self._debt[slot]
            else:
                self._debt[slot] = debt - taken
        self._registry.sweep()

    def _limit_changed(self, backend: Backend, old: int) -> None:
        slot = backend.slot
        new = backend.max_connections
        permits = self._permits.get(slot)
        if new and permits is None:
            in_flight = self._counts.in_flight(slot)
            self._permits[slot] = Permits.create(max(0, new - in_flight))
            for link in self._links():
                link.callRemote(commands.Permit, slot=slot, fd=self._permits[slot].fd)
        elif not new and permits is not None:
            # No limit: the workers ask for no permit any more.
            del self._permits[slot]
            self._debt.pop(slot, None)
            permits.close()
        elif permits is not None and new > old:
            permits.give(new - old)
        elif permits is not None:
            debt = old - new - permits.take_up_to(old - new)
            if debt:
                self._debt[slot] = self._debt.get(slot, 0) + debt

    def _allocate(self) -> int:
        """A free slot: not in use, and zero in every worker's cells."""
        counts = self._counts
        for _ in range(counts.slots):
            slot = self._next
            self._next = (self._next + 1) % counts.slots
            if slot not in self.slots and not counts.in_flight(slot):
                return slot
        raise RuntimeError(f"all {counts.slots} backend slots are in use")

    def _state(self, backend: Backend, reason: str) -> str:
        return commands.state_of(backend, self._registry.ramping(backend), reason)
