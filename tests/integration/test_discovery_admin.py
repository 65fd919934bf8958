"""
Runtime admin and reload with a real twistd, dnsmasq and demo backends:
backends added and removed through the admin API (every auth failure and a
bad address refused), and a SIGHUP that keeps the discovered and the
admin's backends with their counts.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Processes, free_port
from tests.integration.discovery_support import (
    DNSMASQ,
    Balancer,
    Dnsmasq,
    demo_backend,
    dnsmasq_fixture,  # noqa: F401 (the dnsmasq fixture)
)

pytestmark = pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq is not installed")

TOKEN = "an-admin-token-0123456789"


def call(
    lb: Balancer, method: str, path: str, body: Any = None, token: str | None = TOKEN
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(lb.url + path, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_admin_and_reload(
    processes: Processes, dnsmasq: Dnsmasq, tmp_path: Path
) -> None:
    port = free_port()
    demo_backend(processes, "web", "127.0.0.31", port)
    demo_backend(processes, "extra", "127.0.0.32", port)
    dnsmasq.a_records("web.lb.test", "127.0.0.31")
    dnsmasq.start()
    token = tmp_path / "token"
    token.write_text(TOKEN)
    lb = Balancer(
        processes,
        f"admin_token_file = {token}\n"
        f"[discovery:web]\ntype = dns\nname = web.lb.test\nport = {port}\n"
        f"resolvers = 127.0.0.1:{dnsmasq.port}\nmin_interval = 500ms\n",
    )
    web = f"web-127.0.0.31-{port}"
    lb.wait(lambda: web in lb.backends(), "the discovered backend")
    good = {"name": "extra", "address": f"127.0.0.32:{port}", "weight": 2}

    # Every auth failure, and a bad address: nothing added.
    assert call(lb, "POST", "/api/backends", good, token=None)[0] == 401
    assert (
        call(lb, "POST", "/api/backends", good, token="wrong-token-0123456789")[0]
        == 403
    )
    code, body = call(
        lb, "POST", "/api/backends", {"name": "extra", "address": "nowhere"}
    )
    assert code == 400
    assert body["error"] == (
        "POST /api/backends: [backend:extra] address: 'nowhere' is not valid;"
        " expected host:port, e.g. 127.0.0.1:9001 or [::1]:9001"
    )
    assert set(lb.backends()) == {web}

    code, body = call(lb, "POST", "/api/backends", good)
    assert (code, body["source"], body["weight"]) == (201, "admin", 2.0)
    assert call(lb, "POST", "/api/backends", good)[0] == 409
    for _ in range(20):
        urllib.request.urlopen(lb.url + "/", timeout=5).read()
    assert all(b["total_requests"] for b in lb.backends().values()), lb.backends()

    # SIGHUP (the same file): both stay, with their counts and state.
    before = {
        n: (b["total_requests"], b["state"], b["source"])
        for n, b in lb.backends().items()
    }
    lb.proc.send_signal(signal.SIGHUP)
    lb.wait(lambda: "reload: 0 backends configured" in lb.text(), "the reload")
    after = {
        n: (b["total_requests"], b["state"], b["source"])
        for n, b in lb.backends().items()
    }
    assert after == before
    assert set(after) == {web, "extra"}

    # DELETE: the admin's backend drains and goes; a discovered one is refused.
    assert call(lb, "DELETE", f"/api/backends/{web}", token=None)[0] == 401
    assert call(lb, "DELETE", f"/api/backends/{web}")[0] == 409
    code, body = call(lb, "DELETE", "/api/backends/extra")
    assert (code, body["state"]) == (202, "draining")
    lb.wait(lambda: set(lb.backends()) == {web}, "the admin backend to go")
