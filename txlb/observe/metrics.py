"""
Prometheus metrics for C{/metrics}, through C{prometheus_client}.

Per-request metrics (a counter by backend and status class, a latency
histogram by backend) are updated by L{Metrics.observe}, whose label
children are made once at start so a request costs two increments.  The
registry's own numbers (active connections, health state, weight, picks,
failures, retries, ejections, max_connections, the queue) are read when
Prometheus scrapes, by a custom collector, so they are never stale and cost
nothing in between.

Each L{Metrics} has its own C{CollectorRegistry}: nothing goes in
C{prometheus_client}'s global one, so tests and several instances never
collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from zope.interface import implementer

from txlb import __version__
from txlb.core.backend import Backend
from txlb.core.listeners import BackendListener, IBackendListener
from txlb.core.registry import Registry

__all__ = ["LATENCY_BUCKETS", "STATES", "STATUS_CLASSES", "Metrics"]

STATES = ("healthy", "unhealthy", "draining", "ejected", "starting", "unknown")
"""Every state C{txlb_backend_state} reports, one series each."""

STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
"""Indexed by C{status // 100} (0 and anything above 5 are C{"other"})."""

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds, in seconds, of the latency histogram's buckets."""


class _RegistryCollector(Collector):
    """Reads the registry at scrape time."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        # Brings counts kept elsewhere up to date before a scrape.
        self.refresh: Callable[[], None] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.refresh is not None:
            self.refresh()
        backends = self._registry.backends
        info = GaugeMetricFamily(
            "txlb_build_info", "txlb's version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info

        active = GaugeMetricFamily(
            "txlb_backend_active_connections",
            "Requests in flight to the backend.",
            labels=["backend"],
        )
        up = GaugeMetricFamily(
            "txlb_backend_up",
            "1 if the backend passes its health checks, else 0.",
            labels=["backend"],
        )
        state = GaugeMetricFamily(
            "txlb_backend_state",
            "1 for the backend's current state, 0 for the others.",
            labels=["backend", "state"],
        )
        weight = GaugeMetricFamily(
            "txlb_backend_weight", "The backend's balancing weight.", labels=["backend"]
        )
        picks = CounterMetricFamily(
            "txlb_backend_selections",
            "Times the balancer chose the backend for a request.",
            labels=["backend"],
        )
        failures = CounterMetricFamily(
            "txlb_backend_failures",
            "Requests the backend failed (unreachable, 5xx, reset, timeout).",
            labels=["backend"],
        )
        retries = CounterMetricFamily(
            "txlb_backend_retries",
            "Requests (TCP mode: connections) that failed on the backend before"
            " any answer and were retried on another backend.",
            labels=["backend"],
        )
        ejections = CounterMetricFamily(
            "txlb_backend_ejections",
            "Times the passive checks ejected the backend.",
            labels=["backend"],
        )
        limit = GaugeMetricFamily(
            "txlb_backend_max_connections",
            "Requests or connections the backend takes at once (0: unlimited).",
            labels=["backend"],
        )
        for b in backends:
            name = [b.name]
            active.add_metric(name, b.active + b.siblings)
            up.add_metric(name, 1 if b.healthy else 0)
            current = b.state
            for s in STATES:
                state.add_metric([b.name, s], 1 if s == current else 0)
            weight.add_metric(name, b.weight)
            picks.add_metric(name, b.total_requests)
            failures.add_metric(name, b.failures)
            retries.add_metric(name, b.retries)
            ejections.add_metric(name, b.ejected_total)
            limit.add_metric(name, b.max_connections)
        yield from (active, up, state, weight, picks, failures, retries)
        yield from (ejections, limit)

        queue = self._registry.queue
        yield GaugeMetricFamily(
            "txlb_queue_length",
            "Requests waiting for a backend below its max_connections.",
            value=len(queue),
        )
        yield GaugeMetricFamily(
            "txlb_queue_size",
            "The most requests that may wait.",
            value=queue.size,
        )
        yield CounterMetricFamily(
            "txlb_queued",
            "Requests that waited in the queue.",
            value=queue.total,
        )
        yield CounterMetricFamily(
            "txlb_queue_timeouts",
            "Requests answered 503 after queue_timeout in the queue.",
            value=queue.timeouts,
        )
        yield CounterMetricFamily(
            "txlb_queue_rejections",
            "Requests answered 503 at once because the queue was full.",
            value=queue.full_rejections,
        )


@implementer(IBackendListener)
class Metrics(BackendListener):
    """
    The Prometheus view of one registry; as a registry listener it keeps
    each backend's label children on the backend (C{backend.meters}).

    @ivar prometheus: the C{CollectorRegistry} holding every txlb metric.
    """

    def __init__(self, registry: Registry) -> None:
        self.prometheus = CollectorRegistry(auto_describe=True)
        requests = Counter(
            "txlb_http_requests",
            "HTTP requests proxied, by backend and response status class.",
            ["backend", "status_class"],
            registry=self.prometheus,
        )
        duration = Histogram(
            "txlb_http_request_duration_seconds",
            "Time from sending a request to a backend until its response ended.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=self.prometheus,
        )
        self._requests = requests
        self._duration = duration
        self.collector = _RegistryCollector(registry)
        self.prometheus.register(self.collector)
        registry.subscribe(self)

    def backend_added(self, backend: Backend) -> None:
        """Create the backend's series: a request then costs two increments."""
        name = backend.name
        backend.meters = (
            [self._requests.labels(name, c) for c in STATUS_CLASSES],
            self._duration.labels(name),
        )

    def backend_removed(self, backend: Backend) -> None:
        """Drop the backend's series."""
        backend.meters = None
        for c in STATUS_CLASSES:
            self._requests.remove(backend.name, c)
        self._duration.remove(backend.name)

    def observe(self, backend: Backend, status: int, seconds: float) -> None:
        """
        Count one finished request (the signature of C{HTTPProxy}'s
        C{observe}).
        """
        children = backend.meters
        if children is None:
            return
        counters, histogram = children
        index = status // 100
        counters[index if 0 < index < 6 else 0].inc()
        histogram.observe(seconds)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """
        The metrics in the format the C{Accept} header asks for (Prometheus
        text by default, OpenMetrics on request).

        @return: the body and its content type.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.prometheus), content_type
