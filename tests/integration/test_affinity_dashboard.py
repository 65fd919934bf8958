"""
The dashboard's affinity panel (C{web/affinity.js}) in a real browser: a
C{twistd txlb} with hash, sticky and a rate limit, under a little load.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Processes
from tests.integration.test_dashboard_browser import (  # noqa: F401 (fixture)
    OUTPUT,
    Browser,
    _demo_backends,
    _start_balancer,
    browser,
    needs_browser,
)


@needs_browser
def test_affinity_panel(
    processes: Processes,
    tmp_path: Path,
    browser: Callable[..., Browser],  # noqa: F811 (the fixture)
) -> None:
    """The panel shows each backend's key share, the sticky hits and the
    requests refused, with no console error."""
    backends = _demo_backends(processes, [("web1", "0"), ("web2", "0"), ("web3", "0")])
    balancer = _start_balancer(
        processes,
        tmp_path,
        backends,
        "algorithm = hash\nhash_key = header:X-User\nsticky = cookie:SRV\n"
        "[ratelimit]\nrate = 1\nburst = 2\nkey = header:X-User\n",
    )
    conn = http.client.HTTPConnection("127.0.0.1", balancer.port, timeout=10)
    for i in range(30):
        conn.request("GET", "/", headers={"X-User": f"u{i % 10}"})
        conn.getresponse().read()
    conn.close()
    b = browser()
    page = b.page
    page.goto(balancer.url + "/dashboard/")
    page.wait_for_selector("#affinity:not([hidden])", timeout=15000)
    b.wait_until("document.querySelectorAll('#affinity-hash .bar').length === 3", 10)
    text = page.inner_text("#affinity")
    assert "Key share (hash of header:x-user)" in text
    assert "Sticky sessions (cookie SRV)" in text
    assert "Rate limit (1/s, burst 2, by header:x-user)" in text
    refused = page.inner_text("#affinity-ratelimit")
    assert "refused (429)" in refused and "\n10" in refused, refused
    OUTPUT.mkdir(exist_ok=True)
    page.locator("#affinity").screenshot(path=str(OUTPUT / "dashboard-affinity.png"))
    assert b.problems == [], b.problems
