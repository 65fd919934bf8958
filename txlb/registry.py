"""
The one registry of backends shared by the proxy, the health checker and the
stats app.

It holds each backend's counters and health, picks a backend through a pure
policy and hands out L{Lease}s.  A lease's C{release()} is idempotent, so a
request that ends in several ways at once (backend error and client abort)
still lowers the active count exactly once.  No I/O happens here; time comes
from an injected clock.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from txlb.config import Address, BackendConfig
from txlb.decisions import DecisionLog
from txlb.policy import POLICIES, Policy

__all__ = ["Backend", "Lease", "Registry"]


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

    @property
    def state(self) -> str:
        if self.draining:
            return "draining"
        return "healthy" if self.healthy else "unhealthy"


class Lease:
    """
    One request's or connection's claim on a backend.

    @ivar backend: the backend chosen.
    """

    __slots__ = ("_released", "backend")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._released = False

    def release(self, failed: bool = False) -> bool:
        """
        Give the slot back.  Only the first call counts.

        @param failed: the backend failed this request (counted in
            C{failures}).
        @return: whether this call released it.
        """
        if self._released:
            return False
        self._released = True
        backend = self.backend
        backend.active -= 1
        if failed:
            backend.failures += 1
        return True

    @property
    def released(self) -> bool:
        return self._released


_HISTORY_LENGTH = 50
MAX_WEIGHT = 1000.0


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
    ) -> None:
        self.backends: list[Backend] = [
            Backend(b.name, b.address, b.weight) for b in backends
        ]
        self.algorithm = algorithm
        self._policy: Policy = POLICIES[algorithm]
        self._clock = clock
        self._by_name = {b.name: b for b in self.backends}
        self._available: list[Backend] = list(self.backends)
        self._vclock = 0.0
        self.picks = 0
        self.decisions = DecisionLog(algorithm)
        now = clock.seconds()
        for b in self.backends:
            b.history.append(Transition(now, True, "configured"))

    def acquire(self, exclude: Container[Backend] = ()) -> Lease | None:
        """
        Pick a healthy backend by the policy and count one more active
        request on it.

        @param exclude: backends not to pick (already tried for this request).
        @return: a lease, or L{None} if no backend is available.
        """
        candidates = self._available
        if exclude:
            candidates = [b for b in candidates if b not in exclude]
        if not candidates:
            return None
        index = self._policy(candidates)
        backend = candidates[index]
        self.picks += 1
        decisions = self.decisions
        now = self._clock.seconds()
        if now >= decisions.next_due:
            # Sampled (at most DecisionLog.rate per second): O(1) otherwise.
            decisions.record(now, self.picks, candidates, index, exclude)
        start = max(self._vclock, backend.vtime)
        self._vclock = start
        backend.vtime = start + 1.0 / backend.weight
        backend.active += 1
        backend.total_requests += 1
        return Lease(backend)

    def get(self, name: str) -> Backend:
        """
        @raise KeyError: no backend has that name.
        """
        return self._by_name[name]

    def set_healthy(self, backend: Backend, healthy: bool, reason: str) -> None:
        """
        Take a backend out of rotation or bring it back, recording why.
        """
        if backend.healthy == healthy:
            return
        backend.healthy = healthy
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
        if backend.weight == weight:
            return
        old, backend.weight = backend.weight, weight
        self._changed(backend, f"weight {old:g} -> {weight:g}: {reason}")

    def _changed(self, backend: Backend, reason: str) -> None:
        history = backend.history
        history.append(
            Transition(self._clock.seconds(), backend.healthy, reason, backend.state)
        )
        del history[:-_HISTORY_LENGTH]
        self._available = [b for b in self.backends if b.healthy and not b.draining]
        self.log.info(
            "backend {backend} is {state}: {reason}",
            backend=backend.name,
            state=backend.state,
            reason=reason,
        )

    def snapshot(self) -> dict[str, Any]:
        """
        The registry as plain data for C{/api/server-stats}.
        """
        backends = [
            {
                "name": b.name,
                "address": str(b.address),
                "healthy": b.healthy,
                "state": b.state,
                "active_connections": b.active,
                "total_requests": b.total_requests,
                "failures": b.failures,
                "weight": b.weight,
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
            for b in self.backends
        ]
        return {
            "time": self._clock.seconds(),
            "algorithm": self.algorithm,
            "backends": backends,
            "totals": {
                "backends": len(backends),
                "healthy": len(self._available),
                "active_connections": sum(b.active for b in self.backends),
                "total_requests": sum(b.total_requests for b in self.backends),
                "failures": sum(b.failures for b in self.backends),
            },
        }
