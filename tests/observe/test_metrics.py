"""
Tests for L{txlb.metrics}: what C{/metrics} exposes and how it is named.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.core.test_registry import wait
from tests.support import registry_of
from txlb.config import parse
from txlb.core.registry import Registry
from txlb.observe.metrics import LATENCY_BUCKETS, STATES, Metrics

CONFIG = """
[backend:web1]
address = 127.0.0.1:9001
[backend:web2]
address = 127.0.0.1:9002
weight = 3
"""


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.exposition(None)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for s in family.samples
    }


class MetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = Registry.from_config(parse(CONFIG), self.clock)
        self.metrics = Metrics(self.registry)
        self.web1, self.web2 = self.registry.backends

    def test_requests_by_backend_and_status_class(self) -> None:
        """Each observed request counts under its backend and status class."""
        self.metrics.observe(self.web1, 200, 0.01)
        self.metrics.observe(self.web1, 204, 0.01)
        self.metrics.observe(self.web1, 503, 0.01)
        self.metrics.observe(self.web2, 404, 0.01)
        self.metrics.observe(self.web2, 0, 0.01)
        samples = _samples(self.metrics)
        key = "txlb_http_requests_total"
        self.assertEqual(
            samples[(key, (("backend", "web1"), ("status_class", "2xx")))], 2
        )
        self.assertEqual(
            samples[(key, (("backend", "web1"), ("status_class", "5xx")))], 1
        )
        self.assertEqual(
            samples[(key, (("backend", "web2"), ("status_class", "4xx")))], 1
        )
        self.assertEqual(
            samples[(key, (("backend", "web2"), ("status_class", "other")))], 1
        )

    def test_latency_histogram(self) -> None:
        """Latencies land in a seconds histogram per backend."""
        self.metrics.observe(self.web1, 200, 0.003)
        self.metrics.observe(self.web1, 200, 0.2)
        samples = _samples(self.metrics)
        name = "txlb_http_request_duration_seconds"
        web1 = (("backend", "web1"),)
        self.assertEqual(samples[(name + "_count", web1)], 2)
        self.assertAlmostEqual(samples[(name + "_sum", web1)], 0.203)
        self.assertEqual(
            samples[(name + "_bucket", (("backend", "web1"), ("le", "0.005")))], 1
        )
        self.assertEqual(
            samples[(name + "_bucket", (("backend", "web1"), ("le", "+Inf")))], 2
        )
        self.assertEqual(len(LATENCY_BUCKETS), len(set(LATENCY_BUCKETS)))

    def test_registry_read_at_scrape(self) -> None:
        """Active connections, health, state, weight and counters are current."""
        lease = self.registry.acquire()
        assert lease is not None
        self.registry.set_healthy(self.web1, False, "probe failed")
        self.registry.set_draining(self.web2, True, "test")
        failed = self.registry.acquire()
        self.assertIsNone(failed)
        samples = _samples(self.metrics)
        chosen = lease.backend.name
        self.assertEqual(
            samples[("txlb_backend_active_connections", (("backend", chosen),))], 1
        )
        self.assertEqual(samples[("txlb_backend_up", (("backend", "web1"),))], 0)
        self.assertEqual(samples[("txlb_backend_up", (("backend", "web2"),))], 1)
        for s in STATES:
            self.assertEqual(
                samples[("txlb_backend_state", (("backend", "web2"), ("state", s)))],
                1 if s == "draining" else 0,
            )
        self.assertEqual(samples[("txlb_backend_weight", (("backend", "web2"),))], 3)
        self.assertEqual(
            samples[("txlb_backend_selections_total", (("backend", chosen),))], 1
        )
        lease.release(failed=True)
        samples = _samples(self.metrics)
        self.assertEqual(
            samples[("txlb_backend_failures_total", (("backend", chosen),))], 1
        )
        self.assertEqual(
            samples[("txlb_backend_active_connections", (("backend", chosen),))], 0
        )

    def test_retries_and_ejections(self) -> None:
        """
        Each backend's retries and ejections are counters read from the
        registry at scrape time, zero until something happens.
        """
        backends = {
            (n, (("backend", b),))
            for n in ("txlb_backend_retries_total", "txlb_backend_ejections_total")
            for b in ("web1", "web2")
        }
        self.assertEqual(
            {k: _samples(self.metrics)[k] for k in backends}, dict.fromkeys(backends, 0)
        )
        self.web1.retries += 2
        for _ in range(5):  # [outlier] consecutive_failures defaults to 5
            lease = self.registry.acquire(exclude=[self.web2])
            assert lease is not None
            lease.release(failed=True, why="refused")
        self.assertEqual(self.web1.state, "ejected")
        samples = _samples(self.metrics)
        self.assertEqual(
            samples[("txlb_backend_retries_total", (("backend", "web1"),))], 2
        )
        self.assertEqual(
            samples[("txlb_backend_ejections_total", (("backend", "web1"),))], 1
        )
        self.assertEqual(
            samples[("txlb_backend_ejections_total", (("backend", "web2"),))], 0
        )

    def test_naming_conventions(self) -> None:
        """
        Every name has the txlb_ prefix, counters end in _total, durations are
        in seconds, and each family has help text.
        """
        body, content_type = self.metrics.exposition(None)
        self.assertTrue(content_type.startswith("text/plain"))
        families = list(text_string_to_metric_families(body.decode("utf-8")))
        self.assertTrue(families)
        for family in families:
            self.assertTrue(family.name.startswith("txlb_"), family.name)
            self.assertTrue(family.documentation, family.name)
            if family.type == "counter":
                for sample in family.samples:
                    self.assertTrue(
                        sample.name.endswith(("_total", "_created")), sample.name
                    )
            if family.type == "histogram":
                self.assertTrue(family.name.endswith("_seconds"), family.name)

    def test_unknown_backend_ignored(self) -> None:
        """A backend from another registry is not counted (and does not fail)."""
        other = Registry.from_config(parse(CONFIG), self.clock).backends[0]
        self.metrics.observe(other, 200, 0.01)
        samples = _samples(self.metrics)
        self.assertEqual(
            sum(v for (n, _), v in samples.items() if n == "txlb_http_requests_total"),
            0,
        )

    def test_openmetrics_on_request(self) -> None:
        """An OpenMetrics Accept header gets OpenMetrics, ending in # EOF."""
        body, content_type = self.metrics.exposition(
            "application/openmetrics-text; version=1.0.0"
        )
        self.assertTrue(content_type.startswith("application/openmetrics-text"))
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_own_registry(self) -> None:
        """
        Two Metrics (of two registries: a registry has one) never collide:
        each has its own collector registry.
        """
        second = Metrics(Registry.from_config(parse(CONFIG), self.clock))
        self.metrics.observe(self.web1, 200, 0.01)
        self.assertIsNot(second.prometheus, self.metrics.prometheus)
        key = (
            "txlb_http_requests_total",
            (("backend", "web1"), ("status_class", "2xx")),
        )
        self.assertEqual(_samples(second)[key], 0)


class QueueMetricsTests(SynchronousTestCase):
    def test_queue_and_max_connections(self) -> None:
        """
        The queue's length, size, waits, timeouts and rejections, and each
        backend's max_connections, are read at scrape time.
        """
        clock = Clock()
        config = parse(CONFIG.replace("weight = 3", "max_connections = 1"))
        registry = registry_of(
            config.backends[1:], clock, queue_size=2, queue_timeout=1.0
        )
        metrics = Metrics(registry)
        lease = registry.acquire()
        assert lease is not None
        for _ in range(3):
            wait(registry, (), lambda lease: None, lambda: None)
        samples = _samples(metrics)
        self.assertEqual(
            samples[("txlb_backend_max_connections", (("backend", "web2"),))], 1
        )
        self.assertEqual(samples[("txlb_queue_length", ())], 2)
        self.assertEqual(samples[("txlb_queue_size", ())], 2)
        self.assertEqual(samples[("txlb_queued_total", ())], 2)
        self.assertEqual(samples[("txlb_queue_rejections_total", ())], 1)
        clock.advance(1.0)
        samples = _samples(metrics)
        self.assertEqual(samples[("txlb_queue_length", ())], 0)
        self.assertEqual(samples[("txlb_queue_timeouts_total", ())], 2)
