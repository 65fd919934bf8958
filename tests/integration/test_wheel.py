"""
The sdist and wheel as a new user gets them: `make wheel` (part of `make
test`, scripts/wheel.py) builds both with `python -m build` from the files
a clone has (no web/vendor/, no node_modules/) and installs the wheel into
a fresh virtualenv.  These tests check that installation: the twistd
plugin found, `twistd txlb --check`, the `txlb` command, the dashboard's
files inside the package, and the dashboard working in Chromium when that
copy runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Backend, Balancer
from tests.integration.test_dashboard_browser import (  # noqa: F401 (fixture)
    Browser,
    browser,
    needs_browser,
)

ROOT = Path(__file__).resolve().parents[2]
WHEEL_DIR = Path(os.environ.get("TXLB_WHEEL_DIR", ROOT / "test-output" / "wheel"))
DASHBOARD = ("index.html", "app.js", "style.css", "icon.svg", "vendor/chart.umd.js")


def _pinned_chart_js() -> str:
    package = json.loads((ROOT / "package.json").read_text())
    return str(package["dependencies"]["chart.js"])


@pytest.fixture(scope="module")
def wheel_dir() -> Path:
    if not (WHEEL_DIR / "venv" / "bin" / "twistd").is_file():
        if os.environ.get("TXLB_WHEEL_DIR"):
            pytest.fail(f"no wheel installation in {WHEEL_DIR}: `make wheel` failed?")
        pytest.skip(
            f"NO WHEEL TEST: nothing built in {WHEEL_DIR}; run `make wheel`"
            " (make test does)"
        )
    return WHEEL_DIR


def _run_installed(
    wheel_dir: Path, tmp_path: Path, *argv: str
) -> subprocess.CompletedProcess[str]:
    """A program of the wheel's venv, from an empty directory, isolated."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    program = str(wheel_dir / "venv" / "bin" / argv[0])
    return subprocess.run(
        [program, *argv[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wheel_carries_the_dashboard(wheel_dir: Path) -> None:
    """
    The one wheel holds txlb, the twistd plugin (without an __init__.py
    in twisted/ or twisted/plugins/), the dashboard with the pinned
    Chart.js and its licence, and both console scripts.
    """
    [wheel] = (wheel_dir / "dist").glob("txlb-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        banner = z.read("txlb/web/vendor/chart.umd.js")[:200].decode()
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = z.read(entry_points).decode()
    for name in DASHBOARD:
        assert f"txlb/web/{name}" in names, name
    assert "txlb/web/vendor/chart.js-LICENSE.md" in names
    assert f"Chart.js v{_pinned_chart_js()}" in banner
    assert "twisted/plugins/txlb_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    console = set(scripts.splitlines())
    assert "txlb = txlb.cli:main" in console, scripts
    assert "txlb-demo-backend = backends.__main__:main" in console, scripts


def test_sdist_rebuilds_the_wheel(wheel_dir: Path) -> None:
    """
    The sdist has what the wheel is built from (the wheel was built from
    it): the dashboard with Chart.js, and what fetches Chart.js again.
    """
    [sdist] = (wheel_dir / "dist").glob("txlb-*.tar.gz")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for name in (
        "setup.py",
        "setup.cfg",
        "pyproject.toml",
        "MANIFEST.in",
        "package.json",
        "package-lock.json",
        "scripts/copy-vendor.js",
        "twisted/plugins/txlb_plugin.py",
        "txlb/tap.py",
        "grafana/txlb-dashboard.json",
        *(f"web/{n}" for n in DASHBOARD),
    ):
        assert name in names, name
    assert not any(n.startswith("node_modules/") for n in names)


def test_plugin_found(wheel_dir: Path, tmp_path: Path) -> None:
    """getPlugins(IServiceMaker) in the wheel's venv offers tapname txlb,
    loaded from that venv's site-packages."""
    script = (
        "from twisted.plugin import getPlugins;"
        " from twisted.application.service import IServiceMaker;"
        " import twisted.plugins.txlb_plugin as p, txlb;"
        " print([m.tapname for m in getPlugins(IServiceMaker) if m.tapname == 'txlb']);"
        " print(p.__file__); print(txlb.__file__)"
    )
    result = _run_installed(wheel_dir, tmp_path, "python", "-I", "-c", script)
    assert result.returncode == 0, result.stderr
    found, plugin, package = result.stdout.splitlines()
    assert found == "['txlb']"
    site = str((wheel_dir / "venv" / "lib").resolve())
    for path in (plugin, package):
        assert Path(path).resolve().is_relative_to(site), path


def test_check(wheel_dir: Path, tmp_path: Path) -> None:
    """
    `twistd txlb --config lb.ini --check` of the wheel's venv accepts the
    repository's lb.ini and rejects a bad one with the one-line error;
    its `txlb check` says the same.
    """
    good = tmp_path / "lb.ini"
    good.write_text((ROOT / "lb.ini").read_text())
    bad = tmp_path / "bad.ini"
    bad.write_text("[txlb]\nlisten = tcp:8080\n[health]\ninterval = soon\n")
    result = _run_installed(
        wheel_dir, tmp_path, "twistd", "txlb", "--config", str(good), "--check"
    )
    assert (result.returncode, result.stdout) == (
        0,
        f"txlb: {good}: configuration is valid\n",
    ), result.stderr
    result = _run_installed(
        wheel_dir, tmp_path, "twistd", "txlb", "--config", str(bad), "--check"
    )
    assert result.returncode == 1
    expected = f"txlb: {bad}: [health] interval: 'soon' is not valid;"
    assert result.stderr.startswith(expected), result.stderr
    assert result.stderr.count("\n") == 1
    cli = _run_installed(wheel_dir, tmp_path, "txlb", "check", str(bad))
    assert (cli.returncode, cli.stderr) == (1, result.stderr)


def test_dashboard_files_installed(wheel_dir: Path, tmp_path: Path) -> None:
    """The installed txlb finds every dashboard file inside its package."""
    script = (
        "import json, txlb.observe.assets as w; a = w.WebAssets.find();"
        " print(json.dumps([a.root, sorted(a.files), list(a.missing)]))"
    )
    result = _run_installed(wheel_dir, tmp_path, "python", "-I", "-c", script)
    assert result.returncode == 0, result.stderr
    root, files, missing = json.loads(result.stdout)
    assert Path(root).resolve().is_relative_to((wheel_dir / "venv").resolve()), root
    assert missing == []
    for name in DASHBOARD:
        assert name in files, name


@needs_browser
def test_dashboard_in_browser(
    wheel_dir: Path,
    demo_backend: Callable[..., Backend],
    balancer: Callable[..., Balancer],
    browser: Callable[..., Browser],  # noqa: F811 (the fixture)
) -> None:
    """
    twistd from the wheel's venv serves a dashboard that works in
    Chromium: Chart.js loads (its own 200, as JavaScript), every chart is
    drawn, the backends table fills, and nothing fails or logs an error.
    """
    web = demo_backend("web1")
    lb = balancer(
        [(web.name, web.port)], twistd=str(wheel_dir / "venv" / "bin" / "twistd")
    )
    b = browser()
    scripts: dict[str, tuple[int, str]] = {}
    b.page.on(
        "response",
        lambda r: scripts.__setitem__(
            r.url.rsplit("/", 1)[-1], (r.status, r.headers.get("content-type", ""))
        ),
    )
    response = b.page.goto(lb.url + "/dashboard/")
    assert response is not None and response.status == 200
    b.wait_until("typeof window.Chart === 'function'")
    b.wait_until("document.querySelectorAll('#backends tbody tr').length === 1")
    for canvas in ("chart-active", "chart-rps", "chart-latency", "chart-errors"):
        b.wait_until(f"Chart.getChart('{canvas}') !== undefined")
    assert scripts["chart.umd.js"] == (200, "text/javascript; charset=utf-8")
    version = b.page.evaluate("Chart.version")
    assert version == _pinned_chart_js()
    assert b.problems == []
