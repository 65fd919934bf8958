"""
Discovery in C{/metrics}: refreshes, errors and what each section found,
and the registry's backends by source (C{static}, C{admin}, C{dns:NAME},
C{ec2:NAME}), read when Prometheus scrapes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from txlb.core.registry import Registry
from txlb.discovery.manager import Discoveries

__all__ = ["DiscoveryCollector"]


class DiscoveryCollector(Collector):
    """Reads the registry and the discovery sections at scrape time."""

    def __init__(self, registry: Registry, discoveries: Discoveries | None) -> None:
        self._registry = registry
        self._discoveries = discoveries

    def collect(self) -> Iterator[Metric]:
        by_source = GaugeMetricFamily(
            "txlb_backends",
            "Backends in the registry, by where they came from.",
            labels=["source"],
        )
        counts = Counter(b.source for b in self._registry.backends)
        for source in sorted({"static", *counts}):
            by_source.add_metric([source], counts[source])
        yield by_source
        sections = self._discoveries.sections if self._discoveries else []
        refreshes = CounterMetricFamily(
            "txlb_discovery_refreshes",
            "Answers a discovery section received (empty ones too).",
            labels=["source"],
        )
        errors = CounterMetricFamily(
            "txlb_discovery_errors",
            "Lookups of a discovery section that failed (timeout, SERVFAIL,"
            " API error, throttling).",
            labels=["source"],
        )
        found = GaugeMetricFamily(
            "txlb_discovery_backends",
            "Backends a discovery section holds (its last good answer).",
            labels=["source"],
        )
        up = GaugeMetricFamily(
            "txlb_discovery_up",
            "1 if the section's last lookup was answered, 0 while lookups fail.",
            labels=["source"],
        )
        last = GaugeMetricFamily(
            "txlb_discovery_last_refresh_timestamp_seconds",
            "When the section last received an answer (Unix time).",
            labels=["source"],
        )
        for section in sections:
            key = [section.key]
            refreshes.add_metric(key, section.refreshes)
            errors.add_metric(key, section.errors)
            found.add_metric(key, len(section.last))
            up.add_metric(key, 0 if section.failing_since is not None else 1)
            if section.last_refresh is not None:
                last.add_metric(key, section.last_refresh)
        yield from (refreshes, errors, found, up, last)
