"""
The dashboard in a real browser: Debian's headless Chromium, driven by
Playwright for Python, against a running C{twistd txlb} with demo backends
under a bounded load.

Screenshots go to C{test-output/} (git-ignored) for people to look at.
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Balancer, Processes, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
TOKEN = "dashboard-test-token-0123456789abcdef"

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover - reported as a skip below
    sync_api = None

_needs_browser = [
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"NO BROWSER TEST: {CHROMIUM} is missing (apt-get install chromium)",
    ),
    pytest.mark.skipif(
        sync_api is None,
        reason="NO BROWSER TEST: Playwright for Python is missing"
        " (pip install playwright; never `playwright install`)",
    ),
]


def needs_browser(test: Callable[..., None]) -> Callable[..., None]:
    """Skip, loudly, where there is no Chromium or no Playwright."""
    for mark in _needs_browser:
        test = mark(test)
    return test


def test_installed_package_serves_the_dashboard(tmp_path: Path) -> None:
    """
    The installed txlb (what twistd runs) finds the dashboard's files,
    Chart.js and its license included, inside the package, whatever the
    working directory.
    """
    import subprocess
    import sys

    script = (
        "import json, txlb.observe.assets as w; r = w.find_web_root();"
        " print(json.dumps([str(r), sorted(w.WebAssets.load(r).files)]))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", script],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    root, files = json.loads(out)
    assert "site-packages" in root, root
    for name in ("index.html", "app.js", "style.css", "icon.svg"):
        assert name in files
    assert "vendor/chart.umd.js" in files, "run `make web-vendor`, then reinstall"
    assert "vendor/chart.js-LICENSE.md" in files


def _installed_chart_js() -> None:
    from txlb.observe.assets import find_web_root

    vendor = find_web_root() / "vendor" / "chart.umd.js"
    if not vendor.is_file():
        pytest.fail(
            f"{vendor} is missing: run `make web-vendor` (npm ci + copy) and"
            " reinstall txlb, or the dashboard has no charts"
        )


class Load:
    """
    Concurrent keep-alive GETs through the balancer from a few threads,
    until stopped or until C{seconds} or C{max_requests} run out.
    """

    def __init__(
        self,
        port: int,
        threads: int = 6,
        seconds: float = 60,
        max_requests: int = 60000,
    ) -> None:
        self._port = port
        self._deadline = time.monotonic() + seconds
        self._left = max_requests
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sent = 0
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            self.sent += 1
            return True

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while (
            not self._stop.is_set()
            and time.monotonic() < self._deadline
            and self._take()
        ):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(
                        "127.0.0.1", self._port, timeout=5
                    )
                conn.request("GET", "/load")
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()


def _start_balancer(
    processes: Processes,
    tmp_path: Path,
    backends: list[tuple[str, int]],
    extra: str = "",
    backend_extra: str = "",
) -> Balancer:
    port = free_port()
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    text = (
        f"[txlb]\nlisten = tcp:{port}:interface=127.0.0.1\n"
        f"admin_token_file = {token_file}\nevents_rate = 4\n{extra}\n"
        "[health]\ninterval = 1s\ntimeout = 500ms\n"
    )
    for name, backend_port in backends:
        text += f"[backend:{name}]\naddress = 127.0.0.1:{backend_port}\n{backend_extra}"
    ini = tmp_path / "lb.ini"
    ini.write_text(text)
    from tests.integration.conftest import TWISTD

    argv = [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(ini)]
    proc = processes.start("txlb", argv, port)
    return Balancer(proc, port, tmp_path / "txlb.log")


def _free_ports(count: int) -> list[int]:
    """Distinct free ports: all are held open until all are chosen."""
    import socket

    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _demo_backends(
    processes: Processes, specs: list[tuple[str, str]], capacity: int = 4
) -> list[tuple[str, int]]:
    import sys

    started = []
    for name, delay in specs:
        port = free_port()
        argv = [sys.executable, "-m", "backends", "--name", name, "--port", str(port)]
        argv += ["--delay", delay, "--capacity", str(capacity)]
        processes.start(name, argv, port)
        started.append((name, port))
    return started


class Browser:
    """One headless Chromium page that records every problem it sees."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on(
            "requestfailed",
            lambda r: (
                self.problems.append(f"request failed: {r.url} {r.failure}")
                if not r.url.endswith("/api/events")
                else None
            ),
        )
        page.on(
            "response",
            lambda r: (
                self.problems.append(f"HTTP {r.status}: {r.url}")
                if r.status >= 400
                else None
            ),
        )

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    def wait_until(self, expression: str, seconds: float = 10.0) -> None:
        """
        Poll a JavaScript expression from here until it is true.

        Not page.wait_for_function: its in-page polling evals the predicate,
        which the dashboard's CSP (rightly) forbids.
        """
        _wait(lambda: bool(self.page.evaluate(expression)), seconds, expression)

    def series(self, canvas: str) -> list[list[dict[str, float]]]:
        """The chart's datasets' points, read from Chart.js itself."""
        return self.page.evaluate(  # type: ignore[no-any-return]
            "(id) => Chart.getChart(id).data.datasets.map((d) => d.data.slice())",
            canvas,
        )


@pytest.fixture
def browser() -> Iterator[Callable[..., Browser]]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:

            def page(width: int = 1440, height: int = 1000) -> Browser:
                context = chromium.new_context(
                    viewport={"width": width, "height": height}
                )
                return Browser(context.new_page())

            yield page
        finally:
            chromium.close()


def _stats(balancer: Balancer) -> dict[str, Any]:
    with urllib.request.urlopen(balancer.url + "/api/server-stats", timeout=5) as r:
        return json.load(r)  # type: ignore[no-any-return]


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


@needs_browser
def test_dashboard_live_under_load(
    processes: Processes, tmp_path: Path, browser: Callable[..., Browser]
) -> None:
    """
    Under load the dashboard loads without a console error, goes live over
    SSE, its charts get data and move, the "why" panel explains picks, and a
    drain clicked in the UI takes web2 out of rotation in /api/server-stats.
    """
    _installed_chart_js()
    backends = _demo_backends(
        processes, [("web1", "5ms"), ("web2", "15ms"), ("web3", "5ms-40ms")]
    )
    balancer = _start_balancer(processes, tmp_path, backends)
    OUTPUT.mkdir(exist_ok=True)

    with Load(balancer.port, seconds=90) as load:
        _wait(lambda: load.sent > 200, 20, "the load to start")
        b = browser()
        page = b.page
        response = page.goto(balancer.url + "/dashboard/")
        assert response is not None and response.status == 200
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp

        page.wait_for_selector("#stream[data-mode='live']", timeout=15000)
        b.wait_until("document.querySelectorAll('#backends tbody tr').length === 3", 10)
        b.wait_until(
            "Chart.getChart('chart-rps').data.datasets[0].data.length >= 3", 10
        )
        before = b.series("chart-active")
        rps_before = b.series("chart-rps")[0]
        time.sleep(2.0)
        after = b.series("chart-active")
        rps_after = b.series("chart-rps")[0]
        assert [len(d) for d in before] and len(before) == 3
        assert all(len(a) > len(p) for a, p in zip(after, before, strict=True))
        assert rps_after[-1]["x"] > rps_before[-1]["x"], "the charts do not move"
        assert max(p["y"] for p in rps_after) > 0, "no requests/s reached the chart"
        assert any(p["y"] > 0 for d in after for p in d), "no active connections seen"
        page.wait_for_selector("#decisions li.decision", timeout=10000)
        assert page.locator("#kpi-rps").inner_text() not in ("", "\u2013")

        # Admin: give the token, then drain web2 from its table row.
        page.click("#admin-button")
        page.fill("#admin-token", TOKEN)
        page.click("#admin-save")
        page.wait_for_selector("body.admin", timeout=5000)
        page.click("#backends tr[data-backend='web2'] button:has-text('Drain')")
        _wait(
            lambda: (
                next(x for x in _stats(balancer)["backends"] if x["name"] == "web2")[
                    "state"
                ]
                == "draining"
            ),
            10,
            "web2 to be draining in /api/server-stats",
        )
        page.wait_for_selector(
            "#backends tr[data-backend='web2'] .pill.draining", timeout=5000
        )
        # Draining means no new requests: web2's count stops while others grow.
        first = {x["name"]: x["total_requests"] for x in _stats(balancer)["backends"]}
        time.sleep(1.5)
        second = {x["name"]: x["total_requests"] for x in _stats(balancer)["backends"]}
        assert second["web2"] == first["web2"]
        assert second["web1"] > first["web1"]
        page.wait_for_selector("#events li .pill.draining", timeout=5000)
        # Let the confirmation toasts fade before the picture.
        page.wait_for_selector(".toast", state="detached", timeout=10000)
        page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)

    assert b.problems == [], "\n".join(b.problems)


@needs_browser
def test_dashboard_readable_with_100_backends(
    processes: Processes, tmp_path: Path, browser: Callable[..., Browser]
) -> None:
    """
    With 100 backends the active-connections chart shows their spread (max,
    mean, min) instead of 100 lines, the share chart groups the tail, and
    the table lists every backend.
    """
    _installed_chart_js()
    import sys

    ports = _free_ports(100)
    argv = [sys.executable, "-m", "backends", "--name", "app", "--delay", "2ms-20ms"]
    for port in ports:
        argv += ["--port", str(port)]
    processes.start("backends", argv, ports[-1])
    for port in ports:
        _wait(lambda p=port: _open(p), 10, f"backend port {port}")
    balancer = _start_balancer(
        processes, tmp_path, [(f"app-{i:03d}", port) for i, port in enumerate(ports)]
    )
    OUTPUT.mkdir(exist_ok=True)
    with Load(balancer.port, threads=10, seconds=60):
        b = browser(1440, 1100)
        page = b.page
        page.goto(balancer.url + "/dashboard/")
        page.wait_for_selector("#stream[data-mode='live']", timeout=15000)
        b.wait_until(
            "document.querySelectorAll('#backends tbody tr').length === 100", 15
        )
        time.sleep(4.0)
        labels = page.evaluate(
            "Chart.getChart('chart-active').data.datasets.map((d) => d.label)"
        )
        assert labels == ["max", "mean", "min"]
        share = page.evaluate("Chart.getChart('chart-share').data.labels")
        assert len(share) <= 10
        page.screenshot(path=str(OUTPUT / "dashboard-100.png"), full_page=False)
    assert b.problems == [], "\n".join(b.problems)


@needs_browser
def test_dashboard_shows_the_queue(
    processes: Processes, tmp_path: Path, browser: Callable[..., Browser]
) -> None:
    """
    With more clients than the backends' max_connections, the table shows
    each backend's active requests against its limit ("2 / 2") and the
    summary shows the queue: requests waiting, of queue_size, with those
    timed out.
    """
    _installed_chart_js()
    backends = _demo_backends(processes, [("web1", "300ms"), ("web2", "300ms")])
    balancer = _start_balancer(
        processes,
        tmp_path,
        backends,
        extra="queue_size = 50\nqueue_timeout = 500ms",
        backend_extra="max_connections = 2\n",
    )
    OUTPUT.mkdir(exist_ok=True)
    # 16 clients for 4 slots of 300 ms: about 12 wait, and a client's turn
    # comes after (16 / 4 - 1) x 300 = 900 ms, so waits run past 500 ms and
    # time out for sure (with 12 clients and 700 ms a steady queue's 600 ms
    # wait left timeouts to chance).
    with Load(balancer.port, threads=16, seconds=60):
        b = browser(1440, 1000)
        page = b.page
        page.goto(balancer.url + "/dashboard/")
        page.wait_for_selector("#stream[data-mode='live']", timeout=15000)
        b.wait_until(
            "/^[1-9][0-9]* \\/ 50$/.test(document.getElementById('kpi-queue')"
            ".textContent)",
            15,
        )
        b.wait_until(
            "/^[1-9][0-9]* timed out/.test(document.getElementById('kpi-queue-sub')"
            ".textContent)",
            15,
        )
        b.wait_until(
            "[...document.querySelectorAll('#backends tbody tr td.num:nth-child(3)')]"
            ".some((td) => td.textContent === '2 / 2')",
            10,
        )
        queue = page.locator("#kpi-queue").inner_text()
        totals = _stats(balancer)["totals"]
        assert totals["queue_timeouts"] > 0 and totals["queued_total"] > 0, totals
        assert all(
            x["max_connections"] == 2 and x["active_connections"] <= 2
            for x in _stats(balancer)["backends"]
        )
        page.screenshot(path=str(OUTPUT / "dashboard-queue.png"), full_page=True)
    assert queue.endswith(" / 50"), queue
    # The queue's 503s are answers to the load, not the page's own requests.
    assert b.problems == [], "\n".join(b.problems)


def _open(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@needs_browser
def test_dashboard_falls_back_to_polling(
    processes: Processes, tmp_path: Path, browser: Callable[..., Browser]
) -> None:
    """
    In a browser without EventSource the dashboard polls
    /api/server-stats instead, and its charts still fill.
    """
    _installed_chart_js()
    backends = _demo_backends(processes, [("solo", "2ms")])
    balancer = _start_balancer(processes, tmp_path, backends)
    with Load(balancer.port, threads=2, seconds=30):
        b = browser(1280, 900)
        b.page.add_init_script("delete window.EventSource;")
        b.page.goto(balancer.url + "/dashboard/")
        b.page.wait_for_selector("#stream[data-mode='polling']", timeout=10000)
        b.wait_until(
            "Chart.getChart('chart-rps').data.datasets[0].data.length >= 3", 10
        )
        # The table and totals come only from snapshots, here polled ones.
        b.page.wait_for_selector("#backends tbody tr", timeout=10000)
        assert b.page.locator("#backends tbody tr").count() == 1
    assert b.problems == [], "\n".join(b.problems)
