"""
The one registry of backends shared by the proxy, the health checker and the
stats app.

It holds each backend's counters and state, picks a backend through a pure
policy and hands out L{Lease}s.  A lease's C{release()} is idempotent, so a
request that ends in several ways at once (backend error and client abort)
still lowers the active count exactly once.  No I/O happens here; time comes
from an injected clock.

A backend with C{max_connections} is no candidate while that many leases are
out on it.  When every backend a request could use is full, the request waits
in one FIFO queue (HAProxy's backend queue, see L{Registry.wait}) for a lease,
at most C{queue_timeout} seconds.

Each backend's state comes from one model: the active checks' verdict
(C{healthy}, C{probed}), passive ejection (C{ejected}), slow start (C{weight}
still below C{configured_weight}) and the admin's drain.  Every change is
recorded with its time and cause.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from txlb.config import Address, BackendConfig, OutlierConfig
from txlb.core.decisions import DecisionLog
from txlb.core.index import LoadIndex
from txlb.core.policies import POLICIES, Policy

__all__ = ["Backend", "Lease", "Registry", "Waiter"]


@attrs.define(eq=False)
class Transition:
    """A change of a backend's health or state, kept for the stats and dashboard."""

    time: float
    healthy: bool
    reason: str
    state: str = "healthy"


@attrs.define(eq=False)
class Backend:
    """One backend and its live counters."""

    name: str
    address: Address
    weight: float
    healthy: bool = True
    active: int = 0
    total_requests: int = 0
    failures: int = 0
    vtime: float = 0.0
    draining: bool = False
    history: list[Transition] = attrs.field(factory=list)
    configured_weight: float = 0.0
    slow_start: float = 0.0
    probed: bool = True
    ejected: bool = False
    # The repeat count that lengthens an ejection (reset after a quiet
    # max_ejection_time); ejected_total only grows, for /metrics.
    ejections: int = 0
    ejected_total: int = 0
    # Requests (TCP mode: connections) that failed here and were retried
    # on another backend.
    retries: int = 0
    consecutive_failures: int = 0
    ramp_start: float = 0.0
    last_unejected: float = 0.0
    latency: float = 0.0
    latency_ewma: float = 0.0
    latency_stamp: float = 0.0
    max_connections: int = 0

    @classmethod
    def configured(cls, config: BackendConfig, vtime: float = 0.0) -> Backend:
        """A backend as its configuration starts it (see C{initial_state})."""
        known = config.health.initial_state == "healthy"
        return cls(
            config.name,
            config.address,
            config.weight,
            healthy=known,
            configured_weight=config.weight,
            slow_start=config.health.slow_start,
            probed=known,
            vtime=vtime,
            max_connections=config.max_connections,
        )

    @property
    def full(self) -> bool:
        """At its C{max_connections}: no candidate for another lease now."""
        limit = self.max_connections
        return limit > 0 and self.active >= limit

    @property
    def state(self) -> str:
        """One of draining, ejected, unknown, unhealthy, starting, healthy."""
        if self.draining:
            return "draining"
        if self.ejected:
            return "ejected"
        if not self.healthy:
            return "unhealthy" if self.probed else "unknown"
        if self.weight < self.configured_weight:
            return "starting"
        return "healthy"


class Lease:
    """
    One request's or connection's claim on a backend.

    @ivar backend: the backend chosen.
    """

    __slots__ = ("_registry", "_released", "_sharing", "backend")

    def __init__(self, backend: Backend, registry: Registry) -> None:
        self.backend = backend
        self._registry = registry
        self._released = False
        # Requests in flight on the backend when this one was sent, itself
        # included: what its latency is shared with (see _observe_latency).
        self._sharing = backend.active

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
        if registry._indexed:
            registry._index.touch(backend)  # type: ignore[union-attr]
        if seconds is not None and registry._latency_aware:
            registry._observe_latency(backend, seconds / self._sharing)
        if failed:
            registry._failed(backend, why)
        elif backend.consecutive_failures:
            backend.consecutive_failures = 0
        if registry._waiters:
            # The slot goes to the oldest waiter that may use it, before any
            # new request can take it.
            registry._serve()
        return True

    @property
    def released(self) -> bool:
        return self._released


class Waiter:
    """
    A request waiting in the registry's queue for a backend below its
    C{max_connections} (see L{Registry.wait}).
    """

    __slots__ = ("_on_lease", "_on_timeout", "_registry", "_timer", "exclude")

    def __init__(
        self,
        registry: Registry,
        exclude: Container[Backend],
        on_lease: Callable[[Lease], None],
        on_timeout: Callable[[], None],
    ) -> None:
        self._registry = registry
        self.exclude = exclude
        self._on_lease = on_lease
        self._on_timeout = on_timeout
        self._timer: IDelayedCall | None = None

    def cancel(self) -> bool:
        """
        Stop waiting (the client went away).  Only the first call counts,
        and none after the waiter got its lease or timed out.

        @return: whether this call took it out of the queue.
        """
        return self._leave()

    @property
    def waiting(self) -> bool:
        return self in self._registry._waiters

    def _leave(self) -> bool:
        if self._registry._waiters.pop(self, False) is False:
            return False
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        return True

    def _expired(self) -> None:
        self._timer = None
        if self._leave():
            self._registry.queue_timeouts += 1
            self._on_timeout()


_HISTORY_LENGTH = 50
MAX_WEIGHT = 1000.0
# A backend starting slowly begins at this share of its weight.
_RAMP_FLOOR = 0.05
# Above this many backends in rotation, selection uses a heap (O(log n))
# instead of a scan; both pick the same backend.
_INDEX_ABOVE = 16


class Registry:
    """
    The backends, their health and their active counts.

    @ivar backends: every configured backend, in configuration order.
    """

    log = Logger()

    def __init__(
        self,
        backends: Iterable[BackendConfig],
        clock: IReactorTime,
        algorithm: str = "least_conn",
        outlier: OutlierConfig | None = None,
        panic_threshold: int = 0,
        ewma_decay: float = 10.0,
        queue_size: int = 1024,
        queue_timeout: float = 5.0,
    ) -> None:
        """
        @param outlier: when to eject backends that fail real requests.
        @param panic_threshold: below this percentage of healthy backends,
            balance over all of them (0: never).
        @param ewma_decay: least_time's time constant, in seconds: samples
            older than this weigh less than 1/e, and so does the estimate of
            a backend that has had no sample for that long.
        @param queue_size: at most this many requests wait for a backend
            below its C{max_connections} (0: none wait).
        @param queue_timeout: the longest wait, in seconds.
        """
        self.backends: list[Backend] = [Backend.configured(b) for b in backends]
        self._outlier = outlier or OutlierConfig()
        self._panic_threshold = panic_threshold
        self.panic = False
        self._ramping: list[Backend] = []
        self.algorithm = algorithm
        self._policy: Policy = POLICIES[algorithm]
        self._clock = clock
        # Configuration order, for exact ties; backends added later go last.
        self._position = position = {b: i for i, b in enumerate(self.backends)}
        keys: dict[str, Any] = {
            "least_conn": lambda b: (b.active / b.weight, b.vtime, position[b]),
            "round_robin": lambda b: (b.vtime, position[b]),
        }
        self._index: LoadIndex[Backend] | None = (
            LoadIndex(keys[algorithm], _has_room) if algorithm in keys else None
        )
        self._indexed = False
        self._latency_aware = algorithm == "least_time"
        self._ewma_decay = ewma_decay
        self._by_name = {b.name: b for b in self.backends}
        self._available: list[Backend] = []
        self._vclock = 0.0
        self.picks = 0
        self.decisions = DecisionLog(algorithm)
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        # Insertion-ordered: the oldest waiter first.
        self._waiters: dict[Waiter, None] = {}
        self._serving = False
        self._serve_again = False
        self._serve_later: IDelayedCall | None = None
        self.queued_total = 0
        self.queue_timeouts = 0
        self.queue_full_rejections = 0
        # Backends with a max_connections (the scan path filters only then).
        self._limited = sum(1 for b in self.backends if b.max_connections)
        now = clock.seconds()
        for backend in self.backends:
            why = "configured" if backend.probed else "configured; waiting for a probe"
            backend.history.append(Transition(now, backend.healthy, why, backend.state))
        self._update_available()

    def acquire(self, exclude: Container[Backend] = ()) -> Lease | None:
        """
        Pick a healthy backend by the policy and count one more active
        request on it.

        @param exclude: backends not to pick (already tried for this request).
        @return: a lease, or L{None} if no backend is available.
        """
        if self._ramping:
            self._advance_ramps()
        if self._indexed:
            return self._acquire_indexed(exclude)
        candidates = self._available
        if self._limited:
            candidates = [
                b for b in candidates if not b.full and not (exclude and b in exclude)
            ]
        elif exclude:
            candidates = [b for b in candidates if b not in exclude]
        if not candidates:
            return None
        if self._latency_aware:
            self._estimate(candidates)
        index = self._policy(candidates)
        return self._chosen(candidates[index], candidates, index, exclude)

    def _acquire_indexed(self, exclude: Container[Backend]) -> Lease | None:
        backend = self._index.best(exclude)  # type: ignore[union-attr]
        if backend is None:
            return None
        if self._clock.seconds() < self.decisions.next_due:
            return self._chosen(backend, (), 0, exclude)
        # A sampled decision lists the candidates: O(n), but sampled so that at
        # most CANDIDATE_RATE candidates a second are copied (txlb.decisions).
        candidates = [b for b in self._available if b not in exclude and not b.full]
        return self._chosen(backend, candidates, candidates.index(backend), exclude)

    def _chosen(
        self,
        backend: Backend,
        candidates: Sequence[Backend],
        index: int,
        exclude: Container[Backend],
    ) -> Lease:
        self.picks += 1
        decisions = self.decisions
        now = self._clock.seconds()
        if now >= decisions.next_due and candidates:
            # Sampled (at most DecisionLog.rate per second): O(1) otherwise.
            decisions.record(now, self.picks, candidates, index, exclude)
        start = max(self._vclock, backend.vtime)
        self._vclock = start
        backend.vtime = start + 1.0 / backend.weight
        backend.active += 1
        backend.total_requests += 1
        if self._indexed:
            self._index.touch(backend)  # type: ignore[union-attr]
        return Lease(backend, self)

    def get(self, name: str) -> Backend:
        """
        @raise KeyError: no backend has that name.
        """
        return self._by_name[name]

    def add(self, config: BackendConfig) -> Backend:
        """
        Add a backend (a reload), after the others in configuration order.
        It starts as configured (C{initial_state}), and at the current
        virtual time, so round robin does not send it a burst to catch up.

        @raise ValueError: a backend already has that name.
        """
        if config.name in self._by_name:
            raise ValueError(f"backend {config.name} exists")
        backend = Backend.configured(config, vtime=self._vclock)
        if backend.max_connections:
            self._limited += 1
        self._position[backend] = max(self._position.values(), default=-1) + 1
        self.backends.append(backend)
        self._by_name[backend.name] = backend
        why = "added by reload" + ("" if backend.probed else "; waiting for a probe")
        self._changed(backend, why)
        return backend

    def remove(self, backend: Backend) -> None:
        """
        Forget a backend (a reload; drain it first so none of its requests
        is cut).  Leases still out on it release harmlessly.
        """
        if self._by_name.get(backend.name) is not backend:
            return
        self.backends.remove(backend)
        del self._by_name[backend.name]
        if backend.max_connections:
            self._limited -= 1
        if backend in self._ramping:
            self._ramping.remove(backend)
        self._update_available()
        self._position.pop(backend, None)
        self.log.info("backend {backend} removed", backend=backend.name)

    def set_healthy(self, backend: Backend, healthy: bool, reason: str) -> None:
        """
        Record the active checks' verdict: take a backend out of rotation
        or bring it back (slowly, if C{slow_start} is set), recording why.
        """
        if backend.healthy == healthy and backend.probed:
            return
        recovering = healthy and backend.probed
        backend.healthy = healthy
        backend.probed = True
        if recovering:
            self._start_ramp(backend)
        else:
            self._stop_ramp(backend)
        self._changed(backend, reason)

    def set_draining(self, backend: Backend, draining: bool, reason: str) -> None:
        """
        Drain a backend (no new requests; those in flight finish) or put it
        back in rotation, recording why.
        """
        if backend.draining == draining:
            return
        backend.draining = draining
        self._changed(backend, reason)

    def set_weight(self, backend: Backend, weight: float, reason: str) -> None:
        """
        Change a backend's weight, recording why.

        @raise ValueError: unless 0 < C{weight} <= L{MAX_WEIGHT}.
        """
        if not 0 < weight <= MAX_WEIGHT:
            raise ValueError(f"weight must be above 0 and at most {MAX_WEIGHT:g}")
        if backend.configured_weight == weight:
            return
        old, backend.configured_weight = backend.configured_weight, weight
        if backend not in self._ramping:
            backend.weight = weight
            self._weight_changed(backend)
        self._changed(backend, f"weight {old:g} -> {weight:g}: {reason}")

    def set_max_connections(self, backend: Backend, limit: int, reason: str) -> None:
        """
        Change a backend's C{max_connections} (0: unlimited), recording why.
        Leases already out stay; raising it lets waiters in.

        @raise ValueError: if C{limit} is negative.
        """
        if limit < 0:
            raise ValueError("max_connections must be 0 or more")
        old = backend.max_connections
        if old == limit:
            return
        backend.max_connections = limit
        if backend in self._position:
            self._limited += (limit > 0) - (old > 0)
        self._weight_changed(backend)
        self._changed(
            backend,
            f"max_connections {old or 'unlimited'} -> {limit or 'unlimited'}: {reason}",
        )

    def configure_queue(self, size: int, timeout: float) -> None:
        """
        Change C{queue_size} and C{queue_timeout} (a reload).  Requests
        already waiting keep their place and their deadline.
        """
        self.queue_size = size
        self.queue_timeout = timeout

    # --- the queue -----------------------------------------------------------------

    def full(self, exclude: Container[Backend] = ()) -> bool:
        """
        Whether a request that C{acquire(exclude)} could not serve should
        wait: some backend it may use is in rotation but at its
        C{max_connections}.  (Otherwise no backend is there for it: 503.)
        """
        if not self._limited:
            return False
        index = self._index
        if self._indexed and not exclude:
            return index.parked > 0  # type: ignore[union-attr]
        return any(b.full and b not in exclude for b in self._available)

    def wait(
        self,
        exclude: Container[Backend],
        on_lease: Callable[[Lease], None],
        on_timeout: Callable[[], None],
    ) -> Waiter | None:
        """
        Queue a request for a backend not in C{exclude} (call it when
        L{full} says so).  The oldest waiter that a freed slot suits gets it:
        C{on_lease(lease)} is called once the slot's release is complete.
        After C{queue_timeout} seconds without one, C{on_timeout()} is called
        instead.  Neither is called after L{Waiter.cancel}.

        @return: the waiter, or L{None} if C{queue_size} requests wait
            already (answer 503 at once).
        """
        if len(self._waiters) >= self.queue_size:
            self.queue_full_rejections += 1
            return None
        waiter = Waiter(self, exclude, on_lease, on_timeout)
        self._waiters[waiter] = None
        self.queued_total += 1
        waiter._timer = self._clock.callLater(self.queue_timeout, waiter._expired)
        return waiter

    @property
    def queued(self) -> int:
        """Requests waiting in the queue now."""
        return len(self._waiters)

    def _serve(self) -> None:
        """
        Hand free slots to waiters, oldest first, each to a backend its
        C{exclude} allows.  A lease given out may be released at once, from
        C{on_lease} itself: that inner call only asks this loop to start
        again from the oldest waiter, so none is skipped.
        """
        if self._serving:
            self._serve_again = True
            return
        self._serving = True
        try:
            while self._waiters:
                self._serve_again = False
                for waiter in list(self._waiters):
                    if not waiter.waiting:
                        continue  # cancelled by an earlier waiter's on_lease
                    exclude = waiter.exclude
                    lease = self.acquire(exclude)
                    if lease is None:
                        if not exclude:
                            break  # no room for anyone
                        continue
                    on_lease = waiter._on_lease
                    waiter._leave()
                    on_lease(lease)
                    if self._serve_again:
                        break
                if not self._serve_again:
                    break
        finally:
            self._serving = False

    def _serve_soon(self) -> None:
        """
        Serve the waiters in the next reactor turn: a backend came back,
        was added or had its limit raised, and whoever changed it (a reload
        adding its pool) finishes first.
        """
        if self._waiters and self._serve_later is None:
            self._serve_later = self._clock.callLater(0, self._served_later)

    def _served_later(self) -> None:
        self._serve_later = None
        self._serve()

    # --- passive checks ---------------------------------------------------------

    def _failed(self, backend: Backend, why: str) -> None:
        backend.failures += 1
        backend.consecutive_failures += 1
        limit = self._outlier.consecutive_failures
        if limit and backend.consecutive_failures >= limit and not backend.ejected:
            self._eject(
                backend,
                f"{backend.consecutive_failures} consecutive failures"
                + (f" (last: {why})" if why else ""),
            )

    def _eject(self, backend: Backend, cause: str) -> None:
        outlier = self._outlier
        ejected = sum(1 for b in self.backends if b.ejected)
        allowed = len(self.backends) * outlier.max_ejected_percent // 100
        if outlier.max_ejected_percent:
            allowed = max(1, allowed)
        if ejected >= allowed:
            if backend.consecutive_failures == outlier.consecutive_failures:
                self.log.warn(
                    "backend {backend} not ejected ({cause}): max_ejected_percent"
                    " {percent}% reached",
                    backend=backend.name,
                    cause=cause,
                    percent=outlier.max_ejected_percent,
                )
            return
        now = self._clock.seconds()
        if now - backend.last_unejected > outlier.max_ejection_time:
            backend.ejections = 0
        backend.ejections += 1
        backend.ejected_total += 1
        duration = min(
            outlier.base_ejection_time * backend.ejections, outlier.max_ejection_time
        )
        backend.ejected = True
        backend.consecutive_failures = 0
        self._stop_ramp(backend)
        self._clock.callLater(duration, self._uneject, backend)
        self._changed(backend, f"{cause}; ejected for {duration:g}s")

    def _uneject(self, backend: Backend) -> None:
        backend.ejected = False
        backend.last_unejected = self._clock.seconds()
        if backend.healthy:
            self._start_ramp(backend)
        self._changed(backend, "ejection time over")

    # --- latency estimates (least_time) -------------------------------------

    def _estimate(self, candidates: Sequence[Backend]) -> None:
        """
        Set each candidate's C{latency}, the estimate the policy reads: its
        average, faded by the time since its last sample, so that a backend
        that was slow once and then got no traffic is tried again after a
        while instead of being starved for ever.
        """
        now = self._clock.seconds()
        tau = self._ewma_decay
        for b in candidates:
            b.latency = b.latency_ewma * math.exp(-(now - b.latency_stamp) / tau)

    def _observe_latency(self, b: Backend, seconds: float) -> None:
        """
        Take one sample: a request's latency divided by the requests in
        flight on its backend when it was sent.  By Little's law that is the
        backend's time per request at that load, so the policy's estimate x
        (active + 1) is the wait a new request can expect, whether the
        backend serves requests side by side or queues them (a raw latency
        would count the queue twice).  Samples are averaged with weights
        that fade with their age (time constant C{ewma_decay}).
        """
        now = self._clock.seconds()
        if b.latency_ewma:
            kept = math.exp(-max(0.0, now - b.latency_stamp) / self._ewma_decay)
            b.latency_ewma = b.latency_ewma * kept + seconds * (1 - kept)
        else:
            b.latency_ewma = seconds
        b.latency_stamp = now

    # --- slow start -------------------------------------------------------------

    def _start_ramp(self, backend: Backend) -> None:
        if backend.slow_start <= 0:
            return
        backend.ramp_start = self._clock.seconds()
        backend.weight = backend.configured_weight * _RAMP_FLOOR
        self._weight_changed(backend)
        if backend not in self._ramping:
            self._ramping.append(backend)

    def _stop_ramp(self, backend: Backend) -> None:
        if backend in self._ramping:
            self._ramping.remove(backend)
        backend.weight = backend.configured_weight
        self._weight_changed(backend)

    def _advance_ramps(self) -> None:
        now = self._clock.seconds()
        for backend in list(self._ramping):
            share = (now - backend.ramp_start) / backend.slow_start
            if share >= 1:
                self._stop_ramp(backend)
                self._changed(backend, f"slow start over after {backend.slow_start:g}s")
            else:
                backend.weight = backend.configured_weight * max(_RAMP_FLOOR, share)
                self._weight_changed(backend)

    def _changed(self, backend: Backend, reason: str) -> None:
        history = backend.history
        history.append(
            Transition(self._clock.seconds(), backend.healthy, reason, backend.state)
        )
        del history[:-_HISTORY_LENGTH]
        self._update_available()
        self._serve_soon()
        self.log.info(
            "backend {backend} is {state}: {reason}",
            backend=backend.name,
            state=backend.state,
            reason=reason,
        )

    def _update_available(self) -> None:
        eligible = [b for b in self.backends if not b.draining]
        available = [b for b in eligible if b.healthy and not b.ejected]
        panic = bool(
            self._panic_threshold
            and eligible
            and len(available) * 100 < self._panic_threshold * len(eligible)
        )
        if panic != self.panic:
            self.panic = panic
            self.log.warn(
                "panic mode {onoff}: {healthy} of {total} backends healthy,"
                " threshold {threshold}%",
                onoff="on" if panic else "off",
                healthy=len(available),
                total=len(eligible),
                threshold=self._panic_threshold,
            )
        self._available = eligible if panic else available
        index = self._index
        self._indexed = index is not None and len(self._available) > _INDEX_ABOVE
        if self._indexed:
            index.rebuild(self._available)  # type: ignore[union-attr]

    def _weight_changed(self, backend: Backend) -> None:
        if self._indexed:
            self._index.touch(backend)  # type: ignore[union-attr]

    def describe(self, b: Backend) -> dict[str, Any]:
        """One backend's state and counters as plain data."""
        return {
            "name": b.name,
            "address": str(b.address),
            "healthy": b.healthy,
            "state": b.state,
            "draining": b.draining,
            "active_connections": b.active,
            "total_requests": b.total_requests,
            "failures": b.failures,
            "weight": b.weight,
            "configured_weight": b.configured_weight,
            "ejections": b.ejections,
            "consecutive_failures": b.consecutive_failures,
            "max_connections": b.max_connections,
            "history": [
                {
                    "time": t.time,
                    "healthy": t.healthy,
                    "state": t.state,
                    "reason": t.reason,
                }
                for t in b.history
            ],
        }

    def totals(self) -> dict[str, Any]:
        """Counts over all backends as plain data."""
        backends = self.backends
        return {
            "backends": len(backends),
            "healthy": sum(1 for b in backends if b.healthy),
            "available": len(self._available),
            "active_connections": sum(b.active for b in backends),
            "total_requests": sum(b.total_requests for b in backends),
            "failures": sum(b.failures for b in backends),
            "panic": self.panic,
            "queued": len(self._waiters),
            "queue_size": self.queue_size,
            "queued_total": self.queued_total,
            "queue_timeouts": self.queue_timeouts,
            "queue_full_rejections": self.queue_full_rejections,
        }

    def snapshot(self) -> dict[str, Any]:
        """
        The registry as plain data (the stats app adds rates and latencies
        to it for C{/api/server-stats}).
        """
        return {
            "time": self._clock.seconds(),
            "algorithm": self.algorithm,
            "backends": [self.describe(b) for b in self.backends],
            "totals": self.totals(),
        }


def _has_room(backend: Backend) -> bool:
    return not backend.full
