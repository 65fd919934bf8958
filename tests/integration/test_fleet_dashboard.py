"""
The dashboard's fleet card in Debian's headless Chromium: two real nodes
over a real redis-server; the card shows each node, its load and its view
of each backend, and the fleet's total, and says "fleet: local only" while
Redis is gone.  A screenshot goes to test-output/dashboard-fleet.png.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Processes, free_port
from tests.integration.fleet_support import needs_redis, redis_argv, twistd_argv
from tests.integration.test_dashboard_browser import (  # noqa: F401 (fixture)
    OUTPUT,
    Browser,
    Load,
    _demo_backends,
    _installed_chart_js,
    browser,
    needs_browser,
)
from tests.processes import spawn, wait_for_port


def _node(
    processes: Processes,
    tmp_path: Path,
    name: str,
    redis: int,
    backends: list[tuple[str, int]],
) -> int:
    port = free_port()
    text = (
        f"[txlb]\nlisten = tcp:{port}:interface=127.0.0.1\nevents_rate = 4\n"
        f"[fleet]\nredis = redis://127.0.0.1:{redis}/0\nnode = {name}\n"
    )
    for backend, backend_port in backends:
        text += f"[backend:{backend}]\naddress = 127.0.0.1:{backend_port}\n"
    ini = tmp_path / f"{name}.ini"
    ini.write_text(text)
    processes.start(name, twistd_argv(ini), port)
    return port


@needs_browser
def test_dashboard_shows_the_fleet(
    processes: Processes,
    tmp_path: Path,
    browser: Callable[..., Browser],  # noqa: F811 (the fixture imported above)
) -> None:
    """
    Load through lb-b shows on lb-a's card as lb-b's requests on each
    backend and in the fleet's total; Redis killed, the card says "fleet:
    local only" and why, and "fleet: sharing" once it is back.
    """
    needs_redis()
    _installed_chart_js()
    redis = free_port()
    log = tmp_path / "redis.log"
    server: subprocess.Popen[bytes] = spawn(redis_argv(redis), log)
    processes.procs.append(server)
    wait_for_port(redis, server, log)
    backends = _demo_backends(processes, [("web1", "200ms"), ("web2", "200ms")])
    a = _node(processes, tmp_path, "lb-a", redis, backends)
    b = _node(processes, tmp_path, "lb-b", redis, backends)
    page_of = browser(1440, 1400)
    page = page_of.page
    page.goto(f"http://127.0.0.1:{a}/dashboard/")
    page.wait_for_selector("#fleet:not([hidden])", timeout=15000)
    with Load(b, threads=6, seconds=30):
        page_of.wait_until(
            "document.getElementById('fleet-status').textContent === 'fleet: sharing'"
        )
        page_of.wait_until(
            "[...document.querySelectorAll('#fleet-body tr')].some((tr) =>"
            " tr.cells[0].textContent === 'lb-b'"
            " && Number(tr.cells[1].textContent) > 0)",
            15,
        )
        rows = page.evaluate(
            "[...document.querySelectorAll('#fleet-body tr')]"
            ".map((tr) => [...tr.cells].map((td) => td.textContent))"
        )
        header = page.evaluate(
            "[...document.querySelectorAll('#fleet-head th')]"
            ".map((th) => th.textContent)"
        )
        OUTPUT.mkdir(exist_ok=True)
        page.locator("#fleet").screenshot(path=str(OUTPUT / "dashboard-fleet.png"))
    assert header == ["Node", "Load", "Last heard", "web1", "web2"], header
    names = [r[0] for r in rows]
    assert names == ["lb-a (this node)", "lb-b", "Fleet total"], rows
    lb_b, total = rows[1], rows[2]
    assert int(lb_b[1]) == int(lb_b[3]) + int(lb_b[4]) > 0, rows
    assert int(total[1]) >= int(lb_b[1]), rows
    server.kill()
    server.wait()
    page_of.wait_until(
        "document.getElementById('fleet-status').textContent === 'fleet: local only'",
        10,
    )
    note = page.locator("#fleet-note").inner_text()
    assert "balancing on this node's own counts" in note, note
    page.screenshot(path=str(OUTPUT / "dashboard-fleet-local-only.png"))
    restarted = spawn(redis_argv(redis), tmp_path / "redis-2.log")
    processes.procs.append(restarted)
    page_of.wait_until(
        "document.getElementById('fleet-status').textContent === 'fleet: sharing'",
        10,
    )
    assert page_of.problems == [], "\n".join(page_of.problems)
