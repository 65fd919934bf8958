"""
A real C{twistd -n txlb} whose package lacks the dashboard's Chart.js (as
`pip install .` of a checkout without `make web-vendor` used to give):
one warning at start-up, and C{/dashboard/} a page that says what is
missing, shown as such in Chromium, while the API works.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import TWISTD, free_port
from tests.integration.test_dashboard_browser import (  # noqa: F401 (fixture)
    Browser,
    browser,
    needs_browser,
)
from tests.processes import spawn, stop_all, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def without_chart_js(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """
    twistd running a copy of txlb whose web/ has everything but vendor/
    (first on its path); its URL, that web/ and its log.
    """
    package = tmp_path / "pkg" / "txlb"
    skip = shutil.ignore_patterns("__pycache__", "vendor")
    shutil.copytree(ROOT / "txlb", package, ignore=skip)
    shutil.copytree(ROOT / "web", package / "web", ignore=skip)
    port = free_port()
    ini = tmp_path / "lb.ini"
    ini.write_text(
        f"[txlb]\nlisten = tcp:{port}:interface=127.0.0.1\nshutdown_timeout = 1s\n"
        f"[backend:a]\naddress = 127.0.0.1:{free_port()}\n"
    )
    log = tmp_path / "txlb.log"
    env = os.environ | {"PYTHONPATH": str(tmp_path / "pkg")}
    argv = [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(ini)]
    proc = spawn(argv, log, env=env)
    try:
        wait_for_port(port, proc, log)
        yield f"http://127.0.0.1:{port}", package / "web", log
    finally:
        stop_all([proc])


def test_warning_and_page(without_chart_js: tuple[str, Path, Path]) -> None:
    """
    Start-up logs one warning naming vendor/chart.umd.js, where it was
    looked for and how to get it; /dashboard/ answers 503 with a page
    naming it; the stats API answers.
    """
    url, web, log = without_chart_js
    with urllib.request.urlopen(url + "/api/server-stats", timeout=5) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/dashboard/", timeout=5)
    assert e.value.code == 503
    assert e.value.headers["Content-Type"] == "text/html; charset=utf-8"
    page = e.value.read().decode()
    assert f"Missing from <code>{web}</code>: <code>vendor/chart.umd.js</code>." in page

    lines = log.read_text().splitlines()
    warnings = [line for line in lines if "dashboard is unavailable" in line]
    assert len(warnings) == 1, lines
    assert warnings[0].endswith(
        f"the dashboard is unavailable: vendor/chart.umd.js missing from {web};"
        " install txlb from a wheel built by `python -m build` (it carries"
        " Chart.js), or in a txlb checkout run `make web-vendor` (npm ci) and"
        " reinstall txlb"
    ), warnings[0]


@needs_browser
def test_page_in_browser(
    without_chart_js: tuple[str, Path, Path],
    browser: Callable[..., Browser],  # noqa: F811 (the fixture)
) -> None:
    """
    Chromium shows the page's message (no script runs, none is fetched);
    its only complaint is the page's own 503.
    """
    url, _, _ = without_chart_js
    b = browser()
    response = b.page.goto(url + "/dashboard/")
    assert response is not None and response.status == 503
    assert b.page.inner_text("h1") == "txlb's dashboard is unavailable"
    assert "vendor/chart.umd.js" in b.page.inner_text("body")
    assert b.page.evaluate("typeof window.Chart") == "undefined"
    others = [p for p in b.problems if "503" not in p]
    assert others == [], b.problems
