"""
The one registry of backends shared by the proxy, the health checker and the
stats app.

It owns the backends: who they are (added, changed and removed through
L{Registry.apply}, L{Registry.add} and L{Registry.remove}, which a reload, a
discovery source and the admin API all call), their state and their counts.
It announces every membership change to its listeners
(L{txlb.core.listeners}), picks backends by its policy
(L{txlb.core.policies}) and hands out L{Lease}s.  A lease's C{release()} is
idempotent, so a request that ends in several ways at once (backend error
and client abort) still lowers the active count exactly once.  No I/O
happens here; time comes from an injected clock.

A backend with C{max_connections} is no candidate while that many leases are
out on it; when every backend a request could use is full, the request waits
in the queue (L{txlb.core.queue}).  A removed backend drains first: no new
requests, those in flight finish, then it is gone; one still busy after
C{drain_timeout} is dropped all the same, and its listeners close what is
left on it.  A backend added after start-up enters slowly (C{slow_start})
once it is in rotation.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from txlb.config import BackendConfig, BalancingConfig, Config, OutlierConfig
from txlb.core.backend import Backend
from txlb.core.conflicts import Conflicts
from txlb.core.decisions import DecisionLog
from txlb.core.listeners import IBackendListener
from txlb.core.outlier import Ejector
from txlb.core.policies import Policy
from txlb.core.queue import BackendQueue
from txlb.core.selector import selector_for
from txlb.core.sharing import IOutcomes
from txlb.core.slowstart import Ramps
from txlb.core.states import MAX_WEIGHT, BackendStates

__all__ = ["MAX_WEIGHT", "CountedLease", "Lease", "MembershipError", "Registry"]


class MembershipError(ValueError):
    """A backend cannot join: its name or its address is taken (in words)."""


class Lease:
    """
    One request's or connection's claim on a backend.

    @ivar backend: the backend chosen.
    """

    __slots__ = ("_permit", "_registry", "_released", "_sharing", "backend")

    def __init__(self, backend: Backend, registry: Registry) -> None:
        self.backend = backend
        self._registry = registry
        self._released = False
        # Holds one of the backend's shared permits (txlb.core.sharing).
        self._permit = registry.selector.shared is not None and bool(
            backend.max_connections
        )
        # Requests in flight on the backend when this one was sent, itself
        # included: what its latency is shared with (see LeastTime.observe).
        self._sharing = backend.active + backend.others

    def release(
        self, failed: bool = False, why: str = "", seconds: float | None = None
    ) -> bool:
        """
        Give the slot back.  Only the first call counts.

        @param failed: the backend failed this request (counted in
            C{failures}, and towards passive ejection).
        @param why: what the failure was, in a few words.
        @param seconds: how long the backend took (for least_time).
        @return: whether this call released it.
        """
        if self._released:
            return False
        self._released = True
        backend = self.backend
        backend.active -= 1
        registry = self._registry
        selector = registry.selector
        if selector.indexed:
            selector.index.touch(backend)  # type: ignore[union-attr]
        if seconds is not None and selector.latency_aware:
            selector.policy.observe(
                backend, seconds / self._sharing, registry._clock.seconds()
            )
        if failed:
            registry._failed(backend, why)
        elif backend.consecutive_failures:
            registry._recovered(backend)
        shared = selector.shared
        if shared is not None:
            shared.counted(backend)
            if self._permit:
                shared.give_back(backend)
        if backend.leaving and not backend.active:
            registry._forget(backend)
        if registry.queue.waiters:
            # The slot goes to the oldest waiter that may use it, before any
            # new request can take it.
            registry.queue.serve()
        return True

    @property
    def released(self) -> bool:
        return self._released


class CountedLease(Lease):
    """
    A lease whose end the policy hears of (hash, which keeps the rotation's
    load without scanning it); the other policies' leases are plain.
    """

    __slots__ = ()

    def release(
        self, failed: bool = False, why: str = "", seconds: float | None = None
    ) -> bool:
        if not self._released:
            # Before the count drops: a removal it causes re-counts the rotation.
            self._registry.selector.chooser.released(self.backend)  # type: ignore[attr-defined]
        return super().release(failed, why, seconds)


class Registry(BackendStates):
    """
    The backends, their health and their active counts.

    @ivar backends: every backend, in the order they were added.
    @ivar queue: requests waiting for a backend below its C{max_connections}.
    """

    log = Logger()

    def __init__(
        self,
        balancing: BalancingConfig,
        outlier: OutlierConfig,
        clock: IReactorTime,
        random: Callable[[], float] | None = None,
    ) -> None:
        """
        Use L{from_config}; this starts with no backend.

        @param random: p2c's source of floats in [0, 1)
            (C{random.Random().random}; tests pass a seeded one).
        """
        self.backends: list[Backend] = []
        self._by_name: dict[str, Backend] = {}
        self._clock = clock
        self.balancing = balancing
        self.selector = selector_for(balancing, clock, random)
        self._lease = CountedLease if self.selector.counts_load else Lease
        self._ejector = Ejector(outlier)
        self._ramps = Ramps()
        self._listeners: list[IBackendListener] = []
        self._next_order = 0
        # Set when another process decides ejections (txlb.core.sharing).
        self.outcomes: IOutcomes | None = None
        # A replica (a worker process) logs nothing: its supervisor does.
        self.quiet = False
        self.drain_timeout = balancing.drain_timeout
        self._drains: dict[Backend, IDelayedCall] = {}
        # Added after start-up: slow start from its first moment in rotation.
        self._joining: set[Backend] = set()
        self._conflicts = Conflicts()
        self.queue = BackendQueue(
            self, clock, balancing.queue_size, balancing.queue_timeout
        )

    @classmethod
    def from_config(
        cls,
        config: Config,
        clock: IReactorTime,
        random: Callable[[], float] | None = None,
    ) -> Registry:
        """The registry of a configuration, with its lb.ini backends."""
        registry = cls(config.balancing, config.outlier, clock, random)
        for spec in config.backends:
            registry.add(spec, "configured", joining=False)
        return registry

    # --- picking ----------------------------------------------------------------

    def acquire(
        self, exclude: Container[Backend] = (), key: bytes | None = None
    ) -> Lease | None:
        """
        Pick a healthy backend by the policy and count one more active
        request on it.

        @param exclude: backends not to pick (already tried for this request).
        @param key: the request's key (C{hash_key}), for C{algorithm = hash}.
        @return: a lease, or L{None} if no backend is available.
        """
        if self._ramps.ramping:
            self._advance_ramps()
        backend = self.selector.pick(exclude, key)
        if backend is None:
            return None
        return self._lease(backend, self)

    def acquire_on(
        self,
        backend: Backend,
        exclude: Container[Backend] = (),
        detail: dict[str, Any] | None = None,
    ) -> Lease | None:
        """
        A lease on C{backend} itself (a sticky session's), if it is in
        rotation, not full and not in C{exclude}; else L{None}.

        @param detail: what the decision log says of it.
        """
        if self._ramps.ramping:
            self._advance_ramps()
        if not self.selector.take(backend, exclude, detail):
            return None
        return self._lease(backend, self)

    def full(self, exclude: Container[Backend] = ()) -> bool:
        """
        Whether a request that C{acquire(exclude)} could not serve should
        wait: some backend it may use is in rotation but at its
        C{max_connections}.  (Otherwise no backend is there for it: 503.)
        """
        return self.selector.full(exclude)

    @property
    def algorithm(self) -> str:
        return self.selector.algorithm

    @property
    def policy(self) -> Policy:
        return self.selector.policy

    @property
    def decisions(self) -> DecisionLog:
        return self.selector.decisions

    @property
    def picks(self) -> int:
        return self.selector.picks

    @property
    def panic(self) -> bool:
        return self.selector.panic

    @property
    def available(self) -> int:
        """Backends in rotation now."""
        return len(self.selector.available)

    # --- membership: the one road for backend changes --------------------------------

    def subscribe(self, listener: IBackendListener) -> None:
        """Tell C{listener} of every change, starting with each backend there now."""
        self._listeners.append(listener)
        for backend in self.backends:
            listener.backend_added(backend)

    def get(self, name: str) -> Backend:
        """
        @raise KeyError: no backend has that name.
        """
        return self._by_name[name]

    def find(self, spec: BackendConfig) -> Backend | None:
        """The backend with C{spec}'s name or address, if any."""
        by_name = self._by_name.get(spec.name)
        if by_name is not None:
            return by_name
        for backend in self.backends:
            if backend.address == spec.address:
                return backend
        return None

    def add(self, spec: BackendConfig, cause: str, joining: bool = True) -> Backend:
        """
        Add a backend, after the others.  It starts as configured
        (C{initial_state}), and at the current virtual time, so round robin
        does not send it a burst to catch up.

        @param joining: it joins a running balancer (not its configuration
            at start-up), so with C{slow_start} it ramps up from its first
            moment in rotation, as a backend coming back does.
        @raise MembershipError: a backend has that name or address already.
        """
        taken = self.find(spec)
        if taken is not None:
            what = "name" if taken.name == spec.name else f"address {spec.address}"
            raise MembershipError(
                f"the {what} is used by backend {taken.name} ({taken.source})"
            )
        backend = Backend(spec, vtime=self.selector.vclock, order=self._next_order)
        self._next_order += 1
        if backend.max_connections:
            self.selector.limited += 1
        for listener in self._listeners:
            listener.backend_added(backend)
        self.backends.append(backend)
        self._by_name[backend.name] = backend
        if joining and backend.slow_start > 0:
            if backend.healthy:
                self._start_ramp(backend)
            else:
                self._joining.add(backend)
        self._changed(
            backend, cause + ("" if backend.probed else "; waiting for a probe")
        )
        return backend

    def update(self, backend: Backend, spec: BackendConfig, cause: str) -> None:
        """
        Give C{backend} a new configuration of the same name and address.
        A changed weight replaces the admin's; a changed C{max_connections}
        applies at once (requests over a lowered limit finish).  A backend
        leaving is put back.
        """
        old = backend.spec
        if backend.leaving:
            backend.leaving = False
            timer = self._drains.pop(backend, None)
            if timer is not None:
                timer.cancel()
            self.set_draining(backend, False, f"back ({cause})")
        if spec == old:
            return
        backend.spec = spec
        if spec.weight != old.weight:
            self.set_weight(backend, spec.weight, cause)
        if spec.max_connections != old.max_connections:
            self.set_max_connections(backend, spec.max_connections, cause)
        if spec.priority != old.priority:
            self._changed(
                backend, f"priority {old.priority} -> {spec.priority}: {cause}"
            )
        for listener in self._listeners:
            listener.backend_changed(backend, old)

    def remove(self, backend: Backend, cause: str) -> None:
        """
        Take C{backend} out: it drains (no new requests; those in flight
        finish) and is then forgotten, its listeners told.  If it is still
        busy after C{drain_timeout} (unless 0), it is forgotten then, and
        its listeners close what is left on it.
        """
        if self._by_name.get(backend.name) is not backend or backend.leaving:
            return
        backend.leaving = True
        if backend.draining:
            self._changed(backend, f"{cause}: draining")
        else:
            self.set_draining(backend, True, f"{cause}: draining")
        if not backend.active and not backend.siblings:
            self._forget(backend)
        elif self.drain_timeout > 0:
            self._drains[backend] = self._clock.callLater(
                self.drain_timeout, self._drain_expired, backend
            )

    def _drain_expired(self, backend: Backend) -> None:
        del self._drains[backend]
        self._changed(
            backend,
            f"still {backend.active + backend.siblings} in flight after"
            f" drain_timeout {self.drain_timeout:g}s: closing them",
        )
        self._forget(backend)

    def sweep(self) -> None:
        """
        Forget the backends leaving with nothing left in flight anywhere
        (the supervisor of worker processes, whose leases are theirs).
        """
        for backend in list(self.backends):
            if backend.leaving and not backend.active and not backend.siblings:
                self._forget(backend)

    def forget(self, backend: Backend) -> None:
        """Drop C{backend} now (its supervisor says it is gone everywhere)."""
        self._forget(backend)

    def apply(self, source: str, specs: Iterable[BackendConfig], cause: str) -> None:
        """
        Make C{source}'s backends exactly C{specs}: add the new ones, update
        the changed ones, remove the others.  A spec whose name or address
        another source's backend holds is passed over, with a warning (once
        while that conflict lasts, however often the source answers).
        """
        wanted = {spec.name: spec for spec in specs}
        passed_over: list[tuple[BackendConfig, Backend]] = []
        for backend in list(self.backends):
            if backend.source == source and backend.name not in wanted:
                self.remove(backend, f"removed by {cause}")
        for spec in wanted.values():
            found = self.find(spec)
            if found is None:
                self.add(spec, f"added by {cause}")
            elif found.source == source and found.address == spec.address:
                self.update(found, spec, cause)
            else:
                passed_over.append((spec, found))
        self._conflicts.report(source, passed_over, cause)

    def _forget(self, backend: Backend) -> None:
        """A leaving backend drained: drop it and tell the listeners."""
        if self._by_name.get(backend.name) is not backend:
            return
        self.backends.remove(backend)
        del self._by_name[backend.name]
        timer = self._drains.pop(backend, None)
        if timer is not None:
            timer.cancel()
        self._joining.discard(backend)
        if backend.max_connections:
            self.selector.limited -= 1
        self._ramps.stop(backend)
        self.selector.rotate(self.backends)
        for listener in self._listeners:
            listener.backend_removed(backend)
        if not self.quiet:
            self.log.info("backend {backend} removed", backend=backend.name)
