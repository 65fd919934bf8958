"""
Active health checks: a LoopingCall probes every backend concurrently
through an injected treq client; C{rise} good probes in a row bring a
backend back, C{fall} bad ones take it out.

A probe that hangs is cut off by its own timeout, and a probe that fails in
any way counts as bad: the loop itself never stops or waits past the
timeout.
"""

from __future__ import annotations

from typing import Any

import attrs
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from txlb.config import HealthConfig
from txlb.registry import Backend, Registry

__all__ = ["HealthChecker", "Verdict", "judge"]


@attrs.frozen
class Verdict:
    """One probe's result: good or not, and why in words."""

    ok: bool
    reason: str


def judge(status: int | None, error: str | None, timeout: float) -> Verdict:
    """
    Classify a probe result.  Pure.

    @param status: the HTTP status, if the probe got an answer.
    @param error: what went wrong otherwise (C{"timeout"} for a timeout).
    """
    if status is not None:
        if 200 <= status < 400:
            return Verdict(True, f"probe answered {status}")
        return Verdict(False, f"probe answered {status}")
    if error == "timeout":
        return Verdict(False, f"probe timed out after {timeout:g}s")
    return Verdict(False, f"probe failed: {error}")


@attrs.define
class _Streak:
    good: int = 0
    bad: int = 0


class HealthChecker(Service):
    """Probes every backend each C{interval} and updates the registry."""

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        client: HTTPClient,
        clock: IReactorTime,
        config: HealthConfig,
    ) -> None:
        self._registry = registry
        self._client = client
        self._clock = clock
        self._config = config
        self._streaks = {b: _Streak() for b in registry.backends}
        self._loop = LoopingCall(self.check_all)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._config.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check_all(self) -> Deferred[Any]:
        """Probe every backend at once; fires when all probes have ended."""
        return DeferredList(
            [self._probe(b) for b in self._registry.backends], consumeErrors=True
        )

    def _probe(self, backend: Backend) -> Deferred[None]:
        config = self._config
        url = f"http://{backend.address}{config.path}"
        d = self._client.get(url, headers={"User-Agent": ["txlb-health-check"]})
        d.addCallback(self._read)
        d.addTimeout(config.timeout, self._clock, onTimeoutCancel=_timed_out)
        d.addCallbacks(
            lambda status: judge(status, None, config.timeout),
            lambda failure: judge(None, _describe(failure), config.timeout),
        )
        d.addCallback(self._record, backend)
        d.addErrback(lambda f: self.log.failure("health probe bookkeeping", f))
        return d

    @staticmethod
    def _read(response: Any) -> Deferred[int]:
        d: Deferred[Any] = response.content()
        return d.addCallback(lambda _: response.code)

    def _record(self, verdict: Verdict, backend: Backend) -> None:
        streak = self._streaks[backend]
        config = self._config
        if verdict.ok:
            streak.good += 1
            streak.bad = 0
            if not backend.healthy and streak.good >= config.rise:
                self._registry.set_healthy(
                    backend, True, f"{streak.good} good probes in a row"
                )
        else:
            streak.bad += 1
            streak.good = 0
            if backend.healthy and streak.bad >= config.fall:
                self._registry.set_healthy(
                    backend,
                    False,
                    f"{streak.bad}/{config.fall} probes bad: {verdict.reason}",
                )


def _timed_out(result: object, timeout: float) -> Failure:
    # Whatever the cancelled request failed with (treq wraps the
    # CancelledError), a probe cut off by its timeout is a timeout.
    return Failure(TimeoutError(timeout))


def _describe(failure: Failure) -> str:
    if failure.check(TimeoutError):
        return "timeout"
    return failure.getErrorMessage() or failure.type.__name__
