"""
The dashboard's Workers card in Chromium, against a real twistd with
C{workers = 2} under a bounded load (screenshot: test-output/).
"""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.conftest import Backend, Balancer
from tests.integration.test_dashboard_browser import (
    OUTPUT,
    Browser,
    browser,  # noqa: F401 (the fixture)
    needs_browser,
)
from tests.integration.test_workers import Load, serving


@needs_browser
def test_workers_card(
    browser: Callable[..., Browser],  # noqa: F811
    balancer: Callable[..., Balancer],
    demo_backend: Callable[..., Backend],
) -> None:
    """
    With two workers the card lists both, serving, with their requests in
    flight and client connections; the page reports no problem.
    """
    backends = [demo_backend(f"web{i}", delay="40ms") for i in range(3)]
    lb = balancer([(b.name, b.port) for b in backends], "workers = 2")
    serving(lb)
    page = browser()
    with Load(lb.port, 12) as load:
        page.page.goto(lb.url + "/dashboard/")
        page.wait_until(
            "document.querySelectorAll('#workers tbody tr').length === 2"
            " && !document.getElementById('workers-card').hidden"
        )
        page.wait_until(
            "[...document.querySelectorAll('#workers tbody tr')].every("
            "  (tr) => tr.textContent.includes('serving')"
            "    && Number(tr.children[5].textContent) > 0)",
            seconds=15,
        )
        OUTPUT.mkdir(exist_ok=True)
        page.page.screenshot(path=str(OUTPUT / "dashboard-workers.png"), full_page=True)
        clients = page.page.evaluate(
            "[...document.querySelectorAll('#workers tbody tr')]"
            ".map((tr) => Number(tr.children[5].textContent))"
        )
    assert load.failed == []
    # The 12 clients and the browser's own connections, spread over both.
    assert sum(clients) >= 12, clients
    assert min(clients) >= 4, clients
    assert page.problems == []
