"""
The state of each backend, as one model: the active checks' verdict, passive
ejection, slow start, the admin's drain, weight and limit, each change
recorded with its time and cause and announced to the listeners.

L{BackendStates} is the registry's half that changes state
(L{txlb.core.registry.Registry} adds membership and picking): it owns the
ejector (L{txlb.core.outlier}) and the ramps (L{txlb.core.slowstart}), and
tells the selector (L{txlb.core.selector}) when the rotation or a backend's
cost changed.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from txlb.core.backend import Backend, Ejection
from txlb.core.listeners import IBackendListener
from txlb.core.outlier import Ejector
from txlb.core.queue import BackendQueue
from txlb.core.selector import Selector
from txlb.core.sharing import IOutcomes
from txlb.core.slowstart import Ramps

__all__ = ["MAX_WEIGHT", "BackendStates"]

MAX_WEIGHT = 1000.0


class BackendStates:
    """
    Changes to backends' state (see the module docstring).

    @ivar backends: every backend, in the order they were added.
    @ivar outcomes: where passive results go when another process decides
        ejections (L{txlb.core.sharing}); L{None}: decided here.
    @ivar quiet: log nothing (a worker process's replica: its supervisor
        logs).
    """

    log = Logger()
    backends: list[Backend]
    selector: Selector
    queue: BackendQueue
    outcomes: IOutcomes | None
    quiet: bool
    _clock: IReactorTime
    _ejector: Ejector
    _ramps: Ramps
    _listeners: list[IBackendListener]
    _by_name: dict[str, Backend]
    _joining: set[Backend]

    # --- state ------------------------------------------------------------------

    def set_healthy(self, backend: Backend, healthy: bool, reason: str) -> None:
        """
        Record the active checks' verdict: take a backend out of rotation
        or bring it back (slowly, if C{slow_start} is set), recording why.
        """
        if backend.healthy == healthy and backend.probed:
            return
        recovering = healthy and (backend.probed or backend in self._joining)
        self._joining.discard(backend)
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
        back in rotation, recording why.  A backend leaving stays drained.
        """
        if backend.draining == draining or (backend.leaving and not draining):
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
        if backend not in self._ramps.ramping:
            backend.weight = weight
            self._touch(backend)
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
        if self._by_name.get(backend.name) is backend:
            self.selector.limited += (limit > 0) - (old > 0)
        self._touch(backend)
        self._changed(
            backend,
            f"max_connections {old or 'unlimited'} -> {limit or 'unlimited'}: {reason}",
        )

    # --- passive checks and slow start --------------------------------------------

    def outcome(self, backend: Backend, failed: bool, why: str = "") -> None:
        """
        A passive result seen elsewhere (another worker process): a failure,
        or the first success after failures.
        """
        if failed:
            self._failed(backend, why)
        else:
            backend.consecutive_failures = 0

    def _recovered(self, backend: Backend) -> None:
        backend.consecutive_failures = 0
        if self.outcomes is not None:
            self.outcomes.recovered(backend)

    def _failed(self, backend: Backend, why: str) -> None:
        outcomes = self.outcomes
        if outcomes is not None:
            backend.failures += 1
            backend.consecutive_failures += 1
            outcomes.failed(backend, why)
            return
        now = self._clock.seconds()
        ejected = sum(1 for b in self.backends if b.ejected)
        ejection = self._ejector.failed(backend, why, ejected, len(self.backends), now)
        if ejection is None:
            return
        self._eject(backend, *ejection)

    def eject_by_peer(
        self, backend: Backend, seconds: float, node: str, why: str
    ) -> bool:
        """
        Eject C{backend} on a fleet peer's word (L{txlb.fleet}) for the
        C{seconds} the peer's own ejection has left, recorded as "ejected by
        peer NODE: WHY", within C{max_ejected_percent} like the passive
        checks' own.  Nothing happens to a backend ejected already.

        @return: whether it was ejected.
        """
        if backend.ejected or seconds <= 0 or backend.leaving:
            return False
        cause = f"ejected by peer {node}: {why}"
        ejected = sum(1 for b in self.backends if b.ejected)
        if not self._ejector.room(ejected, len(self.backends)):
            self.log.warn(
                "backend {backend} not {cause}: max_ejected_percent reached",
                backend=backend.name,
                cause=cause,
            )
            return False
        self._eject(backend, seconds, cause, node)
        return True

    def _eject(
        self, backend: Backend, seconds: float, cause: str, by: str = ""
    ) -> None:
        backend.ejected = True
        backend.ejection = Ejection(self._clock.seconds() + seconds, cause, by)
        self._stop_ramp(backend)
        self._clock.callLater(seconds, self._uneject, backend)
        self._changed(backend, cause)

    def _uneject(self, backend: Backend) -> None:
        backend.ejected = False
        backend.ejection = None
        backend.last_unejected = self._clock.seconds()
        if backend.healthy:
            self._start_ramp(backend)
        self._changed(backend, "ejection time over")

    def _start_ramp(self, backend: Backend) -> None:
        if self._ramps.start(backend, self._clock.seconds()):
            self._touch(backend)

    def _stop_ramp(self, backend: Backend) -> None:
        self._ramps.stop(backend)
        self._touch(backend)

    def _advance_ramps(self) -> None:
        changed, finished = self._ramps.advance(self._clock.seconds())
        for backend in changed:
            self._touch(backend)
        for backend in finished:
            self._changed(backend, f"slow start over after {backend.slow_start:g}s")

    # --- rotation -------------------------------------------------------------------

    def _changed(self, backend: Backend, reason: str) -> None:
        transition = backend.record(self._clock.seconds(), reason)
        self.selector.rotate(self.backends)
        self.queue.serve_soon()
        for listener in self._listeners:
            listener.backend_state(backend, transition)
        if self.quiet:
            return
        self.log.info(
            "backend {backend} is {state}: {reason}",
            backend=backend.name,
            state=backend.state,
            reason=reason,
        )

    def _touch(self, backend: Backend) -> None:
        """C{backend}'s cost or room changed: re-place it in the index."""
        self.selector.touch(backend)

    def restate(
        self,
        backend: Backend,
        healthy: bool,
        probed: bool,
        ejected: bool,
        draining: bool,
        leaving: bool,
        configured_weight: float,
        ramp_start: float,
        reason: str,
    ) -> None:
        """
        Take C{backend}'s state as another process decided it (the
        supervisor of worker processes): health, ejection, drain, weight
        and the start of its slow start, on the same clock.
        """
        backend.healthy = healthy
        backend.probed = probed
        backend.ejected = ejected
        backend.draining = draining
        backend.leaving = leaving
        backend.configured_weight = configured_weight
        if ramp_start:
            self._ramps.start(backend, ramp_start)
            self._ramps.advance(self._clock.seconds())
        else:
            self._ramps.stop(backend)
        self._touch(backend)
        self._changed(backend, reason)

    def ramping(self, backend: Backend) -> bool:
        """Whether C{backend} is starting slowly now."""
        return backend in self._ramps.ramping
