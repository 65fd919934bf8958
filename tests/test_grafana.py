"""
Tests for grafana/txlb-dashboard.json: an importable dashboard whose
panels users expect are there and whose queries name only series txlb's
C{/metrics} has.  tests/integration/test_prometheus.py runs every query
against a real Prometheus scraping a real txlb.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.config import parse
from txlb.core.registry import Registry
from txlb.observe.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "grafana" / "txlb-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text("utf-8"))  # type: ignore[no-any-return]


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
    ]


def exported_series() -> set[str]:
    """The sample names txlb's /metrics has (histogram parts included)."""
    registry = Registry.from_config(
        parse("[backend:a]\naddress = 127.0.0.1:1\n"), Clock()
    )
    body, _ = Metrics(registry).exposition(None)
    return {
        sample.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


class DashboardTests(SynchronousTestCase):
    def test_importable(self) -> None:
        """
        A Grafana dashboard with a Prometheus data source input, every panel
        and query bound to it, unique panel ids and a place on the grid.
        """
        dashboard = load()
        [source] = dashboard["__inputs"]
        self.assertEqual(
            (source["name"], source["type"], source["pluginId"]),
            ("DS_PROMETHEUS", "datasource", "prometheus"),
        )
        self.assertEqual(dashboard["uid"], "txlb-overview")
        ids = [panel["id"] for panel in dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        for panel in dashboard["panels"]:
            self.assertEqual(
                set(panel["gridPos"]), {"h", "w", "x", "y"}, panel["title"]
            )
            self.assertLessEqual(panel["gridPos"]["x"] + panel["gridPos"]["w"], 24)
            if panel["type"] == "row":
                continue
            self.assertEqual(panel["datasource"], DATASOURCE, panel["title"])
            self.assertTrue(panel["targets"], panel["title"])
            for target in panel["targets"]:
                self.assertEqual(target["datasource"], DATASOURCE, panel["title"])
        for variable in dashboard["templating"]["list"]:
            self.assertEqual(variable["datasource"], DATASOURCE)
            self.assertEqual(variable["allValue"], ".*")

    def test_expected_panels(self) -> None:
        """
        Requests by backend and status class, p50/p95/p99 from the
        histogram, active connections, health state, queue, retries and
        ejections each have their panel.
        """
        by_title = {title: expr for title, expr in queries(load())}
        titles = set(by_title)
        for title in (
            "Requests / s by backend and status class",
            "Latency p50 / p95 / p99",
            "Active connections by backend",
            "Health state",
            "Backend state now",
            "Queue",
            "Retries / s by backend",
            "Ejections by backend",
        ):
            self.assertIn(title, titles)
        latency = [e for t, e in queries(load()) if t == "Latency p50 / p95 / p99"]
        self.assertEqual(
            [re.match(r"histogram_quantile\(([0-9.]+),", e).group(1) for e in latency],  # type: ignore[union-attr]
            ["0.5", "0.95", "0.99"],
        )
        for expr in latency:
            self.assertIn("txlb_http_request_duration_seconds_bucket", expr)
        self.assertIn(
            "by (backend, status_class)",
            by_title["Requests / s by backend and status class"],
        )

    def test_queries_name_exported_series(self) -> None:
        """Every txlb_ name in a query is a series txlb exports."""
        exported = exported_series()
        used = set()
        for title, expr in queries(load()):
            names = set(re.findall(r"\btxlb_[a-z_]+\b", expr))
            self.assertTrue(names, title)
            self.assertLessEqual(names, exported, title)
            used |= names
        for needed in (
            "txlb_backend_retries_total",
            "txlb_backend_ejections_total",
            "txlb_backend_state",
            "txlb_queue_length",
        ):
            self.assertIn(needed, used)
