"""
Rolling statistics over the registry: requests per second, error rate and
latency percentiles per backend and in total, and a once-a-second history
for the dashboard's charts.

Everything is bounded: per-second counters live in a ring of L{_SLOTS}
buckets, latencies in a deque of the newest L{LATENCY_SAMPLES}, and the
history in a deque of L{HISTORY_POINTS} samples, so memory stays flat
however long txlb runs.  L{Stats.observe} is on every request's path and
does O(1) work; percentiles are computed only when a snapshot is read.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from txlb.core.backend import Backend
from txlb.core.listeners import BackendListener, IBackendListener
from txlb.core.registry import Registry
from txlb.observe.view import describe, totals

__all__ = [
    "HISTORY_FIELDS",
    "HISTORY_POINTS",
    "LATENCY_SAMPLES",
    "LATENCY_WINDOW",
    "RATE_WINDOW",
    "Sampler",
    "Series",
    "Stats",
    "percentile",
]

RATE_WINDOW = 5
"""Requests per second and error rate are measured over this many seconds."""

LATENCY_WINDOW = 30.0
"""Latency percentiles cover responses that ended this many seconds ago at most..."""

LATENCY_SAMPLES = 512
"""...and, per backend, at most this many of the newest of them."""

HISTORY_POINTS = 900
"""The history keeps this many once-a-second samples (15 minutes)."""

HISTORY_FIELDS = ("active", "rps", "p50", "p95", "p99", "error_rate")
"""The columns of each history sample (latencies in milliseconds)."""

_SLOTS = RATE_WINDOW + 3


def percentile(ordered: Sequence[float], p: float) -> float:
    """
    The nearest-rank C{p}th percentile of a sorted, non-empty sequence.
    """
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


class Series:
    """
    The rolling counters of one backend (or of all of them).

    @ivar responses: responses observed since start.
    @ivar errors: those with a status of 500 or more.
    """

    __slots__ = (
        "_counts",
        "_errors",
        "_stamps",
        "_times",
        "_values",
        "errors",
        "responses",
    )

    def __init__(self) -> None:
        self._stamps = [-1] * _SLOTS
        self._counts = [0] * _SLOTS
        self._errors = [0] * _SLOTS
        # When each recent response ended, and how long it took.
        self._times: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._values: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.responses = 0
        self.errors = 0

    def add(self, now: float, seconds: float, error: bool) -> None:
        """Count one response that took C{seconds}.  O(1)."""
        second = int(now)
        i = second % _SLOTS
        if self._stamps[i] != second:
            self._stamps[i] = second
            self._counts[i] = 0
            self._errors[i] = 0
        self._counts[i] += 1
        self.responses += 1
        if error:
            self._errors[i] += 1
            self.errors += 1
        self._times.append(now)
        self._values.append(seconds)

    def window(self, now: float, since: float) -> tuple[int, int, float]:
        """
        The responses and errors of the last L{RATE_WINDOW} seconds (the
        current one so far included), and the seconds that covers.

        @param since: when counting started (a younger window is shorter).
        """
        second = int(now)
        first = second - RATE_WINDOW + 1
        count = errors = 0
        for i in range(_SLOTS):
            if first <= self._stamps[i] <= second:
                count += self._counts[i]
                errors += self._errors[i]
        span = min(RATE_WINDOW - 1 + (now - second), now - since)
        return count, errors, max(span, 1.0)

    def latencies(self, now: float) -> list[float]:
        """The recent response times in seconds, sorted."""
        cutoff = now - LATENCY_WINDOW
        times = self._times
        if not times or times[-1] < cutoff:
            return []
        if times[0] >= cutoff:
            return sorted(self._values)
        start = bisect_left(list(times), cutoff)
        return sorted(list(self._values)[start:])


def _latency_ms(ordered: list[float]) -> dict[str, float | None]:
    if not ordered:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{p}": round(percentile(ordered, p) * 1000.0, 3) for p in (50, 95, 99)}


@implementer(IBackendListener)
class Stats(BackendListener):
    """
    Rolling statistics of one registry, fed by the proxy's C{observe} hook;
    as a registry listener it keeps each backend's L{Series} on the backend
    (C{backend.series}).
    """

    def __init__(
        self,
        registry: Registry,
        clock: IReactorTime,
        history_points: int = HISTORY_POINTS,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._started = clock.seconds()
        self._total = Series()
        # The front end's own counters (open, refused, rejected), when wired.
        self.clients: Callable[[], dict[str, int]] | None = None
        # Each discovery section's status (txlb.discovery), when wired.
        self.discovery: Callable[[], list[dict[str, Any]]] | None = None
        # More of the snapshot, from the parts that are configured (sticky
        # sessions, rate limits): name -> its data; and per backend.
        self.sections: dict[str, Callable[[], Any]] = {}
        self.backend_fields: list[Callable[[Backend], dict[str, Any]]] = []
        # Each worker process's figures (workers = N), when wired.
        self.workers: Callable[[], list[dict[str, Any]]] | None = None
        # Brings counts kept elsewhere up to date before a snapshot.
        self.refresh: Callable[[], None] | None = None
        # The fleet's view (txlb.fleet), when there is one.
        self.fleet: Callable[[], dict[str, Any]] | None = None
        self._history: deque[
            tuple[float, tuple[float | None, ...], tuple[Any, ...]]
        ] = deque(maxlen=history_points)
        registry.subscribe(self)

    def backend_added(self, backend: Backend) -> None:
        backend.series = Series()

    def observe(self, backend: Backend, status: int, seconds: float) -> None:
        """
        Count one finished request (the signature of C{HTTPProxy}'s
        C{observe}).  O(1).
        """
        now = self._clock.seconds()
        error = status >= 500
        series = backend.series
        if series is not None:
            series.add(now, seconds, error)
        self._total.add(now, seconds, error)

    def snapshot(self) -> dict[str, Any]:
        """
        Everything C{/api/server-stats} shows: the registry's counters and
        health with the rolling rates and percentiles.
        """
        if self.refresh is not None:
            self.refresh()
        now = self._clock.seconds()
        registry = self._registry
        total_count, total_errors, total_span = self._total.window(now, self._started)
        backends = [self._entry(b, now, total_count) for b in registry.backends]
        clients, fleet = self.clients, self.fleet
        discovery = self.discovery
        return {
            "time": now,
            "algorithm": registry.algorithm,
            "clients": clients() if clients is not None else {},
            **{name: section() for name, section in self.sections.items()},
            "discovery": discovery() if discovery is not None else [],
            **({"workers": self.workers()} if self.workers is not None else {}),
            "uptime": now - self._started,
            "window_seconds": {"rate": RATE_WINDOW, "latency": LATENCY_WINDOW},
            "backends": backends,
            "fleet": fleet() if fleet is not None else None,
            "totals": {
                **totals(registry),
                "responses": self._total.responses,
                "rps": round(total_count / total_span, 3),
                "error_rate": round(total_errors / total_count, 4)
                if total_count
                else 0.0,
                "latency_ms": _latency_ms(self._total.latencies(now)),
            },
        }

    def entry(self, backend: Backend) -> dict[str, Any]:
        """One backend as C{/api/server-stats} shows it."""
        now = self._clock.seconds()
        total_count, _, _ = self._total.window(now, self._started)
        return self._entry(backend, now, total_count)

    def _entry(self, b: Backend, now: float, total_count: int) -> dict[str, Any]:
        series = b.series
        count, errors, span = series.window(now, self._started)
        entry = {
            **describe(b),
            "rps": round(count / span, 3),
            "error_rate": round(errors / count, 4) if count else 0.0,
            "share": round(count / total_count, 4) if total_count else 0.0,
            "latency_ms": _latency_ms(series.latencies(now)),
        }
        for fields in self.backend_fields:
            entry.update(fields(b))
        return entry

    def sample(self) -> None:
        """Add one point to the history (the L{Sampler} calls this each second)."""
        now = self._clock.seconds()

        since = self._started

        def rps(series: Series) -> float:
            count, _, span = series.window(now, since)
            return round(count / span, 3)

        backends = self._registry.backends
        count, errors, span = self._total.window(now, since)
        latency = _latency_ms(self._total.latencies(now))
        sums = (
            sum(b.active + b.siblings for b in backends),
            round(count / span, 3),
            latency["p50"],
            latency["p95"],
            latency["p99"],
            round(errors / count, 4) if count else 0.0,
        )
        self._history.append(
            (now, sums, tuple((b.active + b.siblings, rps(b.series)) for b in backends))
        )

    def history(self, seconds: float | None = None) -> dict[str, Any]:
        """
        The history as compact columns for C{/api/history}: each point has
        the totals as L{HISTORY_FIELDS} and, per backend (in the order of
        C{"backends"}), C{[active, rps]}.

        @param seconds: only the points of the last C{seconds}.
        """
        points = list(self._history)
        if seconds is not None:
            cutoff = self._clock.seconds() - seconds
            points = [p for p in points if p[0] >= cutoff]
        return {
            "time": self._clock.seconds(),
            "fields": list(HISTORY_FIELDS),
            "backend_fields": ["active", "rps"],
            "backends": [b.name for b in self._registry.backends],
            "points": [
                {"time": t, "totals": list(totals), "backends": [list(b) for b in per]}
                for t, totals, per in points
            ],
        }


class Sampler(Service):
    """Calls L{Stats.sample} every C{interval} seconds while running."""

    log = Logger()

    def __init__(
        self, stats: Stats, clock: IReactorTime, interval: float = 1.0
    ) -> None:
        self._interval = interval
        self._loop = LoopingCall(self._sample, stats)
        self._loop.clock = clock

    def _sample(self, stats: Stats) -> None:
        try:
            stats.sample()
        except Exception:
            # A LoopingCall stops for good after an error: never let it.
            self.log.failure("stats sample failed")

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
