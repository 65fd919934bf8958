"""
One backend: its configuration, its live counters and its state.

A L{Backend} is owned by the registry (L{txlb.core.registry}), which alone
changes its state; every other part reads it.  Its C{spec} is the frozen
configuration it was given (from lb.ini, a discovery source or the admin
API); a change of configuration replaces the spec, never the backend, so
its counts and state live on.
"""

from __future__ import annotations

from typing import Any

import attrs

from txlb.config import Address, BackendConfig

__all__ = ["HISTORY_LENGTH", "Backend", "Ejection", "Transition"]

HISTORY_LENGTH = 50
"""State changes kept per backend."""


@attrs.frozen
class Transition:
    """A change of a backend's health or state, kept for the stats and dashboard."""

    time: float
    healthy: bool
    reason: str
    state: str = "healthy"


@attrs.frozen
class Ejection:
    """
    An ejection in force: until when (the registry's clock), why, and on
    whose word: C{by} is empty for this balancer's own passive checks, else
    the fleet peer's node name (L{txlb.fleet}).
    """

    until: float
    cause: str
    by: str = ""


@attrs.define(eq=False)
class Backend:
    """
    One backend and its live counters.

    @ivar weight: the weight in use (below C{configured_weight} while it
        starts slowly).
    @ivar configured_weight: the spec's weight, or the admin's.
    @ivar others: requests in flight on it elsewhere, which the policies
        and C{max_connections} count with C{active}: always C{siblings +
        peers} (whoever changes one of those sets C{others} too).
    @ivar siblings: requests in flight on it from this balancer's other
        worker processes (L{txlb.workers}).
    @ivar peers: requests in flight on it from the other balancers of a
        fleet (L{txlb.fleet}).
    @ivar order: its place in the registry, for exact ties.
    @ivar slot: its place in the counts shared by worker processes
        (L{txlb.workers.shm}), or -1.
    @ivar leaving: its source dropped it: draining, then removed.
    @ivar ejection: the ejection in force while C{ejected}, else L{None}.

    The last four attributes are for the rooms that keep something per
    backend (attached when the registry announces it, dropped with it):
    C{pool} the HTTP connection pool, C{series} the rolling stats,
    C{meters} the Prometheus series, C{probe} the health checker's track.
    """

    spec: BackendConfig
    name: str = attrs.field(init=False)
    address: Address = attrs.field(init=False)
    weight: float = attrs.field(init=False)
    configured_weight: float = attrs.field(init=False)
    max_connections: int = attrs.field(init=False)
    healthy: bool = attrs.field(init=False)
    probed: bool = attrs.field(init=False)
    active: int = 0
    others: int = 0
    siblings: int = 0
    peers: int = 0
    total_requests: int = 0
    failures: int = 0
    vtime: float = 0.0
    order: int = 0
    slot: int = -1
    draining: bool = False
    leaving: bool = False
    ejected: bool = False
    # The repeat count that lengthens an ejection (reset after a quiet
    # max_ejection_time); ejected_total only grows, for /metrics.
    ejections: int = 0
    ejected_total: int = 0
    # Requests (TCP mode: connections) that failed here and were retried
    # on another backend.
    retries: int = 0
    ejection: Ejection | None = None
    consecutive_failures: int = 0
    last_unejected: float = 0.0
    ramp_start: float = 0.0
    latency: float = 0.0
    latency_ewma: float = 0.0
    latency_stamp: float = 0.0
    history: list[Transition] = attrs.Factory(list)
    pool: Any = None
    series: Any = None
    meters: Any = None
    probe: Any = None

    def __attrs_post_init__(self) -> None:
        spec = self.spec
        self.name = spec.name
        self.address = spec.address
        self.weight = self.configured_weight = spec.weight
        self.max_connections = spec.max_connections
        # initial_state: healthy, or unknown until the first probe decides.
        self.healthy = self.probed = spec.health.initial_state == "healthy"

    @property
    def source(self) -> str:
        return self.spec.source

    @property
    def slow_start(self) -> float:
        return self.spec.health.slow_start

    @property
    def load(self) -> int:
        """Requests in flight on it, here and elsewhere."""
        return self.active + self.others

    @property
    def full(self) -> bool:
        """At its C{max_connections}: no candidate for another lease now."""
        limit = self.max_connections
        return limit > 0 and self.active + self.others >= limit

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

    def record(self, now: float, reason: str) -> Transition:
        """Keep a state change (the registry's, at each change)."""
        transition = Transition(now, self.healthy, reason, self.state)
        history = self.history
        history.append(transition)
        del history[:-HISTORY_LENGTH]
        return transition
