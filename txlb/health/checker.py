"""
Active health checks: one LoopingCall probes every backend that is due,
concurrently, through an injected probe (HTTP through treq, or a TCP
connect when no path is set); C{rise} good probes in a row bring a backend
back, C{fall} bad ones take it out.

The loop never waits for a probe: each probe has its own timeout, a
backend whose probe is still out is skipped, and any failure becomes a bad
verdict, so one hanging or broken backend never stops or delays the rest.
"""

from __future__ import annotations

import attrs
from twisted.application.service import Service
from twisted.internet.defer import TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txlb.config import BackendConfig, Config, HealthConfig
from txlb.core.backend import Backend
from txlb.core.listeners import BackendListener, IBackendListener
from txlb.core.registry import Registry
from txlb.health.probes import IProbe, Verdict, describe

__all__ = ["HealthChecker"]


@attrs.define
class _Track:
    """What the checker knows of one backend between probes."""

    health: HealthConfig
    due: float = 0.0
    busy: bool = False
    good: int = 0
    bad: int = 0


@implementer(IBackendListener)
class HealthChecker(Service, BackendListener):
    """
    Probes each backend every C{interval} (its spec's health settings) and
    updates the registry.  As a registry listener it keeps its track of a
    backend on the backend itself (C{backend.probe}).
    """

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        http_probe: IProbe,
        tcp_probe: IProbe,
        clock: IReactorTime,
        period: float,
    ) -> None:
        """
        @param period: how often the loop looks for backends due a probe:
            the shortest health interval configured.
        """
        self._registry = registry
        self._http = http_probe
        self._tcp = tcp_probe
        self._clock = clock
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock
        self._period = period
        registry.subscribe(self)

    @classmethod
    def from_config(
        cls,
        config: Config,
        registry: Registry,
        http_probe: IProbe,
        tcp_probe: IProbe,
        clock: IReactorTime,
    ) -> HealthChecker:
        intervals = [config.health.interval]
        intervals += [b.health.interval for b in config.backends]
        intervals += [d.backend.health.interval for d in config.discoveries]
        return cls(registry, http_probe, tcp_probe, clock, min(intervals))

    def backend_added(self, backend: Backend) -> None:
        """Probe it from the next tick."""
        backend.probe = _Track(backend.spec.health)

    def backend_changed(self, backend: Backend, old: BackendConfig) -> None:
        """New health settings start a new count of good and bad probes."""
        if backend.spec.health != old.health:
            backend.probe = _Track(backend.spec.health)

    def backend_removed(self, backend: Backend) -> None:
        """Stop probing it; a probe still out is not counted."""
        backend.probe = None

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._period, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def tick(self) -> None:
        """Start a probe of every backend that is due and not being probed."""
        # A tick that runs late must not push the next one past its due
        # time: half a tick of slack keeps every backend on its interval.
        now = self._clock.seconds()
        slack = self._period / 2
        for backend in self._registry.backends:
            track = backend.probe
            if not track.busy and now + slack >= track.due:
                self._probe(backend, track, now)

    def _probe(self, backend: Backend, track: _Track, now: float) -> None:
        health = track.health
        track.due = now + health.interval
        track.busy = True
        probe = self._http if health.path else self._tcp
        d = probe.check(backend.address, health)
        d.addTimeout(health.timeout, self._clock, onTimeoutCancel=_timed_out)
        d.addErrback(describe, health.timeout)
        d.addCallback(self._record, backend, track)
        d.addErrback(lambda f: self.log.failure("health probe bookkeeping", f))
        d.addBoth(lambda _: setattr(track, "busy", False))

    def _record(self, verdict: Verdict, backend: Backend, track: _Track) -> None:
        if backend.probe is not track:
            return  # removed, or given new settings, while the probe was out
        health = track.health
        registry = self._registry
        if verdict.ok:
            track.good += 1
            track.bad = 0
            if backend.probed and backend.healthy:
                return
            if not backend.probed or track.good >= health.rise:
                registry.set_healthy(
                    backend,
                    True,
                    f"{track.good}/{health.rise} good probes: {verdict.reason}",
                )
        else:
            track.bad += 1
            track.good = 0
            if backend.probed and not backend.healthy:
                return
            if not backend.probed or track.bad >= health.fall:
                registry.set_healthy(
                    backend,
                    False,
                    f"{track.bad}/{health.fall} probes bad: {verdict.reason}",
                )


def _timed_out(result: object, timeout: float) -> Failure:
    # Whatever the cancelled probe failed with (treq wraps the
    # CancelledError), a probe cut off by its timeout is a timeout.
    return Failure(TimeoutError(timeout))
