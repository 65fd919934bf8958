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

from collections.abc import Mapping

import attrs
from twisted.application.service import Service
from twisted.internet.defer import TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from txlb.config import HealthConfig
from txlb.core.registry import Backend, Registry
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


class HealthChecker(Service):
    """Probes each backend every C{interval} and updates the registry."""

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        http_probe: IProbe,
        tcp_probe: IProbe,
        clock: IReactorTime,
        health: Mapping[str, HealthConfig],
    ) -> None:
        """
        @param health: each backend's settings, by backend name.
        """
        self._registry = registry
        self._http = http_probe
        self._tcp = tcp_probe
        self._clock = clock
        self._tracks = {b: _Track(health[b.name]) for b in registry.backends}
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock
        self._period = min(t.health.interval for t in self._tracks.values())

    def track(self, backend: Backend, health: HealthConfig) -> None:
        """Probe a backend added by a reload, from the next tick."""
        self._tracks[backend] = _Track(health)

    def forget(self, backend: Backend) -> None:
        """Stop probing a backend removed by a reload."""
        self._tracks.pop(backend, None)

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
        for backend, track in self._tracks.items():
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
