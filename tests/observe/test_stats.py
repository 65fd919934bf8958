"""
Tests for L{txlb.stats}: rolling windows, percentiles, the bounded history
and the sampler service, all on a L{task.Clock}.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.config import parse
from txlb.core.registry import Registry
from txlb.observe.stats import (
    LATENCY_SAMPLES,
    LATENCY_WINDOW,
    RATE_WINDOW,
    Sampler,
    Series,
    Stats,
    percentile,
)

CONFIG = """
[backend:web1]
address = 127.0.0.1:9001
[backend:web2]
address = 127.0.0.1:9002
weight = 2
"""


def _setup(start: float = 1000.0) -> tuple[Clock, Registry, Stats]:
    clock = Clock()
    clock.advance(start)
    registry = Registry.from_config(parse(CONFIG), clock)
    return clock, registry, Stats(registry, clock)


def _by_name(snapshot: dict, name: str) -> dict:
    return next(b for b in snapshot["backends"] if b["name"] == name)


class PercentileTests(SynchronousTestCase):
    def test_nearest_rank(self) -> None:
        """Percentiles use the nearest-rank method on sorted values."""
        values = [float(v) for v in range(1, 101)]
        self.assertEqual(percentile(values, 50), 50.0)
        self.assertEqual(percentile(values, 95), 95.0)
        self.assertEqual(percentile(values, 99), 99.0)
        self.assertEqual(percentile(values, 100), 100.0)

    def test_single_value(self) -> None:
        """With one value, every percentile is that value."""
        self.assertEqual(percentile([7.0], 1), 7.0)
        self.assertEqual(percentile([7.0], 99), 7.0)

    @given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200))
    def test_ordered_and_bounded(self, values: list[float]) -> None:
        """p50 <= p95 <= p99, all within the values' range."""
        ordered = sorted(values)
        p50, p95, p99 = (percentile(ordered, p) for p in (50, 95, 99))
        self.assertTrue(ordered[0] <= p50 <= p95 <= p99 <= ordered[-1])


class SeriesTests(SynchronousTestCase):
    def test_window_counts_recent_seconds_only(self) -> None:
        """
        The window covers the last RATE_WINDOW seconds, the current partial
        one included; older buckets are reused, not kept.
        """
        series = Series()
        for second in range(100, 120):
            for _ in range(10):
                series.add(second + 0.5, 0.01, error=second % 2 == 0)
        count, errors, span = series.window(119.5, since=0.0)
        self.assertEqual(count, 10 * RATE_WINDOW)
        self.assertEqual(
            errors, 10 * sum(1 for s in range(120 - RATE_WINDOW, 120) if s % 2 == 0)
        )
        self.assertAlmostEqual(span, RATE_WINDOW - 0.5)
        self.assertEqual(series.responses, 200)

    def test_window_of_a_young_process(self) -> None:
        """Just after start, the span is the time since start (at least 1 s)."""
        series = Series()
        series.add(10.2, 0.01, error=False)
        series.add(11.0, 0.01, error=False)
        count, _, span = series.window(12.0, since=10.0)
        self.assertEqual(count, 2)
        self.assertEqual(span, 2.0)
        _, _, span = series.window(10.3, since=10.0)
        self.assertEqual(span, 1.0)

    def test_empty_window_after_silence(self) -> None:
        """After RATE_WINDOW quiet seconds the window is empty."""
        series = Series()
        series.add(50.0, 0.01, error=True)
        count, errors, _ = series.window(50.0 + RATE_WINDOW + 0.1, since=0.0)
        self.assertEqual((count, errors), (0, 0))

    def test_latencies_bounded_in_count_and_age(self) -> None:
        """
        At most LATENCY_SAMPLES latencies are kept, and those older than
        LATENCY_WINDOW are left out.
        """
        series = Series()
        for i in range(LATENCY_SAMPLES * 3):
            series.add(100.0, i / 1000.0, error=False)
        kept = series.latencies(100.0)
        self.assertEqual(len(kept), LATENCY_SAMPLES)
        self.assertEqual(kept[0], (LATENCY_SAMPLES * 2) / 1000.0)
        self.assertEqual(series.latencies(100.0 + LATENCY_WINDOW + 1), [])


class StatsTests(SynchronousTestCase):
    def test_snapshot_schema(self) -> None:
        """
        The snapshot has every field /api/server-stats documents, per backend
        and in total.
        """
        _clock, _registry, stats = _setup()
        snapshot = stats.snapshot()
        self.assertEqual(
            set(snapshot),
            {
                "time",
                "algorithm",
                "uptime",
                "window_seconds",
                "clients",
                "discovery",
                "backends",
                "fleet",
                "totals",
            },
        )
        self.assertEqual(snapshot["clients"], {})  # no front end wired
        self.assertEqual(snapshot["discovery"], [])  # no discovery wired
        self.assertIsNone(snapshot["fleet"])  # no [fleet]
        stats.fleet = lambda: {"node": "lb-a", "status": "sharing"}
        self.assertEqual(stats.snapshot()["fleet"]["node"], "lb-a")
        stats.clients = lambda: {"connections": 3, "refused": 1, "rejected": 2}
        self.assertEqual(stats.snapshot()["clients"]["refused"], 1)
        self.assertEqual(
            set(snapshot["backends"][0]),
            {
                "name",
                "address",
                "source",
                "priority",
                "healthy",
                "state",
                "draining",
                "active_connections",
                "total_requests",
                "failures",
                "weight",
                "configured_weight",
                "ejections",
                "consecutive_failures",
                "max_connections",
                "rps",
                "error_rate",
                "share",
                "latency_ms",
                "history",
            },
        )
        self.assertEqual(
            set(snapshot["totals"]),
            {
                "backends",
                "healthy",
                "available",
                "active_connections",
                "total_requests",
                "failures",
                "responses",
                "panic",
                "queued",
                "queue_size",
                "queued_total",
                "queue_timeouts",
                "queue_full_rejections",
                "rps",
                "error_rate",
                "latency_ms",
            },
        )
        self.assertEqual(
            snapshot["totals"]["latency_ms"], {"p50": None, "p95": None, "p99": None}
        )

    def test_rates_and_percentiles(self) -> None:
        """
        Observed responses give each backend's requests per second, error
        rate, share and latency percentiles, and the totals.
        """
        clock, registry, stats = _setup()
        web1, web2 = registry.backends
        clock.advance(10)
        for i in range(1, 101):
            stats.observe(web1, 200, i / 1000.0)
        for _ in range(30):
            stats.observe(web2, 200, 0.5)
        for _ in range(10):
            stats.observe(web2, 503, 0.5)
        clock.advance(0.5)
        snapshot = stats.snapshot()
        one = _by_name(snapshot, "web1")
        two = _by_name(snapshot, "web2")
        span = RATE_WINDOW - 0.5
        self.assertEqual(one["rps"], round(100 / span, 3))
        self.assertEqual(one["latency_ms"], {"p50": 50.0, "p95": 95.0, "p99": 99.0})
        self.assertEqual(one["error_rate"], 0.0)
        self.assertEqual(two["error_rate"], 0.25)
        self.assertEqual(one["share"], round(100 / 140, 4))
        self.assertEqual(two["share"], round(40 / 140, 4))
        totals = snapshot["totals"]
        self.assertEqual(totals["rps"], round(140 / span, 3))
        self.assertEqual(totals["error_rate"], round(10 / 140, 4))
        self.assertEqual(totals["responses"], 140)
        self.assertEqual(totals["latency_ms"]["p99"], 500.0)

    def test_client_gone_is_not_an_error(self) -> None:
        """Only statuses of 500 and more count as errors (499 does not)."""
        _clock, registry, stats = _setup()
        stats.observe(registry.backends[0], 499, 0.1)
        self.assertEqual(stats.snapshot()["totals"]["error_rate"], 0.0)

    def test_registry_state_shown(self) -> None:
        """Counters, weight, state and history come from the registry."""
        clock, registry, stats = _setup()
        web1 = registry.backends[0]
        lease = registry.acquire()
        assert lease is not None
        clock.advance(1)
        registry.set_healthy(registry.backends[1], False, "3/3 probes bad")
        registry.set_draining(web1, True, "drained by test")
        snapshot = stats.snapshot()
        one = _by_name(snapshot, lease.backend.name)
        self.assertEqual(one["active_connections"], 1)
        self.assertEqual(one["total_requests"], 1)
        self.assertEqual(one["state"], "draining")
        self.assertTrue(one["draining"])
        self.assertEqual(
            one["history"][-1],
            {
                "time": 1001.0,
                "healthy": True,
                "state": "draining",
                "reason": "drained by test",
            },
        )
        two = _by_name(snapshot, "web2")
        self.assertEqual((two["healthy"], two["state"]), (False, "unhealthy"))
        totals = snapshot["totals"]
        self.assertEqual((totals["healthy"], totals["available"]), (1, 0))
        self.assertEqual(totals["active_connections"], 1)

    def test_unknown_backend_counts_in_totals_only(self) -> None:
        """A backend the stats do not know (not configured) only adds to totals."""
        clock, _registry, stats = _setup()
        other = Registry.from_config(parse(CONFIG), clock).backends[0]
        stats.observe(other, 200, 0.01)
        snapshot = stats.snapshot()
        self.assertEqual(snapshot["totals"]["responses"], 1)
        self.assertEqual(sum(b["rps"] for b in snapshot["backends"]), 0)


class HistoryTests(SynchronousTestCase):
    def test_sample_columns(self) -> None:
        """Each sample holds the totals' columns and each backend's [active, rps]."""
        clock, registry, stats = _setup()
        web1 = registry.backends[0]
        registry.acquire()
        stats.observe(web1, 200, 0.002)
        clock.advance(1)
        stats.sample()
        history = stats.history()
        self.assertEqual(
            history["fields"], ["active", "rps", "p50", "p95", "p99", "error_rate"]
        )
        self.assertEqual(history["backends"], ["web1", "web2"])
        (point,) = history["points"]
        self.assertEqual(point["time"], 1001.0)
        # One response in the one second since start.
        self.assertEqual(point["totals"], [1, 1.0, 2.0, 2.0, 2.0, 0.0])
        self.assertEqual(point["backends"], [[1, 1.0], [0, 0.0]])

    def test_bounded(self) -> None:
        """The history keeps its last history_points samples only."""
        clock = Clock()
        registry = Registry.from_config(parse(CONFIG), clock)
        stats = Stats(registry, clock, history_points=10)
        for _ in range(25):
            clock.advance(1)
            stats.sample()
        points = stats.history()["points"]
        self.assertEqual(len(points), 10)
        self.assertEqual(points[0]["time"], 16.0)

    def test_seconds(self) -> None:
        """history(seconds) keeps only the samples of the last seconds."""
        clock, _registry, stats = _setup()
        for _ in range(10):
            clock.advance(1)
            stats.sample()
        self.assertEqual(len(stats.history(3)["points"]), 4)


class SamplerTests(SynchronousTestCase):
    def test_samples_every_interval(self) -> None:
        """The sampler samples at start, then every interval, until stopped."""
        clock, _registry, stats = _setup()
        sampler = Sampler(stats, clock, interval=1.0)
        sampler.startService()
        clock.advance(1)
        clock.advance(1)
        self.assertEqual(len(stats.history()["points"]), 3)
        sampler.stopService()
        clock.advance(5)
        self.assertEqual(len(stats.history()["points"]), 3)

    def test_survives_errors(self) -> None:
        """A failing sample is logged and the loop goes on."""
        clock, _registry, stats = _setup()
        calls = []

        def broken() -> None:
            calls.append(clock.seconds())
            raise RuntimeError("boom")

        stats.sample = broken  # type: ignore[method-assign]
        sampler = Sampler(stats, clock, interval=1.0)
        sampler.startService()
        clock.advance(1)
        clock.advance(1)
        sampler.stopService()
        self.assertEqual(len(calls), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
