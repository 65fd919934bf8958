"""
txlb's C{/metrics} with a real Prometheus (Debian's C{prometheus}, on a
free loopback port, scraping every second) scraping a real C{twistd -n
txlb} under load: every query of every panel of
grafana/txlb-dashboard.json returns data through Prometheus's HTTP API,
and C{promtool check metrics} finds nothing to say about the exposition.

The load meets a healthy backend, one answering 500 to everything and one
refusing connections, so 5xx, retries and ejections have data too.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Backend, Balancer, Processes, free_port
from tests.integration.test_dashboard_browser import Load
from tests.test_grafana import load as load_dashboard
from tests.test_grafana import queries

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# Grafana's variables, as its "All" choice and a rate window of a few scrapes.
VARIABLES = {"$__rate_interval": "10s", "$instance": ".*", "$backend": ".*"}

pytestmark = pytest.mark.skipif(
    not Path(PROMETHEUS).is_file(),
    reason="NO PROMETHEUS TEST: prometheus is missing (scripts/install-system-deps.sh)",
)


def _metrics_text(lb: Balancer) -> bytes:
    with urllib.request.urlopen(lb.url + "/metrics", timeout=5) as r:
        return r.read()  # type: ignore[no-any-return]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as r:
            answer = json.load(r)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]  # type: ignore[no-any-return]


@pytest.fixture
def loaded(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> Iterator[Balancer]:
    """txlb in front of good, failing (500) and dead backends, under load."""
    good, failing = demo_backend("good"), demo_backend("failing")
    failing.control("error-rate", "1")
    lb = balancer(
        [("good", good.port), ("failing", failing.port), ("dead", free_port())],
        health="interval = 1s\ntimeout = 500ms",
    )
    with Load(lb.port, threads=3, seconds=90):
        yield lb


@pytest.fixture
def prometheus(loaded: Balancer, processes: Processes, tmp_path: Path) -> Prometheus:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: txlb\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{loaded.port}']\n"
    )
    processes.start(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        port,
    )
    url = f"http://127.0.0.1:{port}"
    # The port opens before the storage is ready: until then, 503.
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=5):
                return Prometheus(url)
        except urllib.error.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a number (not NaN) in it."""
    return any(not math.isnan(float(r["value"][1])) for r in result)


def test_every_panel_query_returns_data(
    loaded: Balancer, prometheus: Prometheus
) -> None:
    """
    Once Prometheus has scraped txlb for a few seconds, every panel's query
    answers at least one series with a number, and 5xx answers, retries and
    ejections were really counted.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        targets = prometheus.api("/api/v1/targets")["activeTargets"]
        if targets and targets[0]["health"] == "up":
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"prometheus never scraped txlb: {targets}")

    expressions = []
    for title, expr in queries(load_dashboard()):
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, (title, expr)
        expressions.append((title, expr))
    empty = expressions
    while empty and time.monotonic() < deadline:
        empty = [(t, e) for t, e in empty if not _has_data(prometheus.query(e))]
        if empty:
            time.sleep(1)
    assert empty == [], "panels without data after 60 s"

    def values(expr: str) -> dict[str, float]:
        return {
            "/".join(
                r["metric"].get(k, "") for k in ("backend", "status_class")
            ): float(r["value"][1])
            for r in prometheus.query(expr)
        }

    requests = values("txlb_http_requests_total")
    assert requests["good/2xx"] > 0 and requests["failing/5xx"] > 0, requests
    assert values("txlb_backend_retries_total")["dead/"] > 0
    # [outlier] max_ejected_percent (50%) lets one of the three out at once.
    ejections = values("txlb_backend_ejections_total")
    assert ejections["good/"] == 0 and sum(ejections.values()) >= 1, ejections
    assert values("txlb_build_info") == {"/": 1.0}


def test_promtool_check_metrics(loaded: Balancer) -> None:
    """
    promtool check metrics finds no problem in txlb's exposition under load
    (and does find them in a bad one, so the check is not vacuous).
    """
    body = _metrics_text(loaded)
    assert b"txlb_backend_retries_total" in body
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    bad = body + b"# TYPE txlb_oops counter\ntxlb_oops 1\n"
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=bad, capture_output=True, timeout=30
    )
    assert result.returncode != 0
    assert b"txlb_oops" in result.stdout + result.stderr
