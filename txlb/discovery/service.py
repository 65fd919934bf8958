"""
One discovery section at work: a service that asks its source (DNS, EC2)
on its own timer and hands each answer to the registry's one road,
C{Registry.apply(source, specs, cause)}.

  - An answer replaces the section's set: new backends are added (with
    C{initial_state} and slow start), gone ones drain, a new weight
    applies at once.  The same answer twice changes nothing.
  - A failed lookup (timeout, SERVFAIL, API error, throttling) keeps the
    last good set and is retried with backoff (doubling from the
    section's floor to its ceiling, with jitter); the log says so once,
    and once when lookups work again.
  - An authoritative empty answer (NXDOMAIN, no instances) empties the set
    only once answers have been empty for C{empty_hold}.

DNS answers are asked again when their TTL runs out, clamped to
C{min_interval} and C{max_interval}; EC2 every C{interval}.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from txlb.config import BackendConfig, DiscoveryConfig
from txlb.core.registry import Registry
from txlb.discovery.naming import backend_name
from txlb.discovery.source import Answer, IDiscoverySource, LookupFailed

__all__ = ["LOOKUP_TIMEOUT", "DiscoveryService", "Schedule"]

LOOKUP_TIMEOUT = 60.0
"""A lookup with no result after this long counts as failed."""


@attrs.frozen
class Schedule:
    """When to ask again: after an answer, and after failures in a row."""

    low: float
    high: float
    interval: float | None
    floor: float
    ceiling: float

    @classmethod
    def of(cls, config: DiscoveryConfig) -> Schedule:
        """
        DNS: the answer's TTL within C{min_interval} and C{max_interval};
        retries from C{min_interval} up to C{max_interval}.  EC2: every
        C{interval}; retries from 1 s (or C{interval} if shorter) up to
        four intervals, so throttling backs off beyond the usual pace.
        """
        if config.dns is not None:
            dns = config.dns
            low, high = dns.min_interval, dns.max_interval
            return cls(low, high, None, low, high)
        assert config.ec2 is not None
        interval = config.ec2.interval
        return cls(interval, interval, interval, min(1.0, interval), 4 * interval)

    def refresh(self, ttl: float | None) -> float:
        if self.interval is not None:
            return self.interval
        return self.low if ttl is None else min(self.high, max(self.low, ttl))

    def retry(self, failures: int, jitter: float) -> float:
        """
        The wait after C{failures} failed lookups in a row: doubling, and
        between half and all of that (C{jitter} in [0, 1]), so that many
        balancers do not ask in step.
        """
        base = min(self.ceiling, self.floor * 2.0 ** (failures - 1))
        return base * (0.5 + jitter / 2)


class DiscoveryService(Service):
    """
    Keeps one section's backends in the registry as its source answers.

    @ivar last: the set applied last (kept while lookups fail).
    @ivar refreshes: answers received.
    @ivar errors: lookups failed.
    """

    log = Logger()

    def __init__(
        self,
        config: DiscoveryConfig,
        source: IDiscoverySource,
        registry: Registry,
        clock: IReactorTime,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.source = source
        self._registry = registry
        self._clock = clock
        self._jitter = jitter
        self._schedule = Schedule.of(config)
        self._timer: IDelayedCall | None = None
        self._pending: Deferred[Any] | None = None
        self._round = 0
        self.last: tuple[BackendConfig, ...] = ()
        self.refreshes = 0
        self.errors = 0
        self.in_a_row = 0
        self.answer = ""
        self.last_refresh: float | None = None
        self.last_attempt: float | None = None
        self.next_refresh: float | None = None
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.empty_since: float | None = None
        self.name = config.name

    def inherit(self, old: DiscoveryService) -> None:
        """Carry on from C{old} (its section changed on a reload)."""
        self.last = old.last
        self.refreshes, self.errors = old.refreshes, old.errors
        self.last_refresh, self.answer = old.last_refresh, old.answer

    # --- the timer ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._ask()

    def stopService(self) -> None:
        super().stopService()
        self._round += 1  # a lookup still out is ignored when it ends
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.next_refresh = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    def _ask(self) -> None:
        self._timer = None
        self.next_refresh = None
        self.last_attempt = self._clock.seconds()
        this = self._round
        d: Deferred[Any] = maybeDeferred(self.source.lookup)
        d.addTimeout(LOOKUP_TIMEOUT, self._clock, onTimeoutCancel=_no_answer)
        d.addBoth(self._settled, d)
        d.addCallbacks(
            self._answered, self._failed, callbackArgs=(this,), errbackArgs=(this,)
        )
        d.addErrback(self._broken, this)
        if not d.called:
            self._pending = d

    def _settled(self, result: object, d: Deferred[Any]) -> object:
        if self._pending is d:
            self._pending = None
        return result

    def _later(self, delay: float) -> None:
        if self.running:
            self.next_refresh = self._clock.seconds() + delay
            self._timer = self._clock.callLater(delay, self._ask)

    def _broken(self, failure: Failure, this: int) -> None:
        """A bug in handling an answer must not stop the lookups."""
        self.log.failure(
            "discovery {source}: handling an answer failed", failure, source=self.key
        )
        if this == self._round:
            self._later(self._schedule.ceiling)

    # --- answers -------------------------------------------------------------------

    @property
    def key(self) -> str:
        """The source of its backends: C{dns:NAME} or C{ec2:NAME}."""
        return self.config.source

    def _answered(self, answer: Answer, this: int) -> None:
        if this != self._round:
            return
        now = self._clock.seconds()
        self._recovered(now)
        self.refreshes += 1
        self.last_refresh = now
        self.answer = answer.words
        delay = self._schedule.refresh(answer.ttl)
        specs = self.specs(answer)
        hold = self.config.common.empty_hold
        cause = f"{self.key} ({answer.words})"
        if specs or not self.last or hold <= 0:
            if self.empty_since is not None and specs:
                self.log.info(
                    "discovery {source}: {query} answers again ({words})",
                    source=self.key,
                    query=self.source.query,
                    words=answer.words,
                )
            self.empty_since = None
        else:
            if self.empty_since is None:
                self.empty_since = now
                self.log.warn(
                    "discovery {source}: {query} answered empty ({words}); its"
                    " {count} backends stay unless it is still empty after {hold}s",
                    source=self.key,
                    query=self.source.query,
                    words=answer.words,
                    count=len(self.last),
                    hold=f"{hold:g}",
                )
            waited = now - self.empty_since
            if waited < hold:
                self._later(min(delay, hold - waited))
                return
            cause = f"{self.key} ({answer.words} for {waited:.1f}s)"
            self.log.warn(
                "discovery {source}: {query} still empty after {hold}s: draining"
                " its {count} backends",
                source=self.key,
                query=self.source.query,
                hold=f"{hold:g}",
                count=len(self.last),
            )
        self.last = specs
        self._registry.apply(self.key, specs, cause)
        self._later(delay)

    def specs(self, answer: Answer) -> tuple[BackendConfig, ...]:
        """The backends of an answer: the section's keys, each its own address."""
        template = self.config.backend
        found: dict[str, BackendConfig] = {}
        for item in answer.found:
            name = backend_name(self.config.name, item.address)
            if name in found:
                continue
            found[name] = attrs.evolve(
                template,
                name=name,
                address=item.address,
                weight=template.weight if item.weight is None else item.weight,
                priority=item.priority,
            )
        return tuple(found.values())

    def _recovered(self, now: float) -> None:
        if self.failing_since is None:
            return
        self.log.info(
            "discovery {source}: {query} answers again after {count} failed"
            " lookups in {seconds}s",
            source=self.key,
            query=self.source.query,
            count=self.in_a_row,
            seconds=f"{now - self.failing_since:.1f}",
        )
        self.failing_since = None
        self.in_a_row = 0

    def _failed(self, failure: Failure, this: int) -> None:
        if this != self._round:
            return
        now = self._clock.seconds()
        self.errors += 1
        self.in_a_row += 1
        if failure.check(LookupFailed):
            why = failure.getErrorMessage()
        else:
            why = f"{type(failure.value).__name__}: {failure.getErrorMessage()}"
        self.last_error = why
        if self.failing_since is None:
            self.failing_since = now
            self.log.warn(
                "discovery {source}: lookup of {query} failed ({why}); its {count}"
                " backends stay, retrying with backoff",
                source=self.key,
                query=self.source.query,
                why=why,
                count=len(self.last),
            )
        self._later(self._schedule.retry(self.in_a_row, self._jitter()))

    # --- status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What C{/api/server-stats} shows of this section (C{discovery})."""
        if self.failing_since is not None:
            state = "failing"
        elif self.empty_since is not None:
            state = "empty"
        elif self.last_refresh is None:
            state = "starting"
        else:
            state = "ok"
        return {
            "name": self.config.name,
            "type": self.config.type,
            "source": self.key,
            "query": self.source.query,
            "state": state,
            "found": len(self.last),
            "backends": [spec.name for spec in self.last],
            "answer": self.answer,
            "last_refresh": self.last_refresh,
            "last_attempt": self.last_attempt,
            "next_refresh": self.next_refresh,
            "refreshes": self.refreshes,
            "errors": self.errors,
            "last_error": self.last_error,
            "failing_since": self.failing_since,
            "empty_since": self.empty_since,
        }


def _no_answer(result: object, timeout: float) -> Failure:
    return Failure(LookupFailed(f"no answer in {timeout:g}s"))
