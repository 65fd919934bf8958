"""
txlb's own log as JSON lines (C{twistd --logger=txlb.observe.jsonlog.observer})
from a real C{twistd -n txlb}: start-up, a backend that refuses
connections, admin actions and a SIGTERM, every line one JSON object.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import Backend, Balancer, free_port

LOGGER = "txlb.observe.jsonlog.observer"
TOKEN = "Js0n-L0g-T0ken-0123456789abcdef"


def _post(lb: Balancer, path: str, token: str) -> int:
    request = urllib.request.Request(
        lb.url + path, method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_json_lines_from_twistd(
    tmp_path: Path,
    demo_backend: Callable[..., Backend],
    balancer: Callable[..., Balancer],
) -> None:
    """
    Every line twistd writes is one JSON object with time, ts, level,
    namespace and message; txlb's events carry their fields (the ejected
    backend's name and state, the admin action); the admin token is in
    none of them.
    """
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    web = demo_backend("web1")
    dead = free_port()  # nothing listens: connections are refused
    lb = balancer(
        [("web1", web.port), ("dead", dead)],
        extra=f"admin_token_file = {token_file}",
        health="interval = 30s\n[outlier]\nconsecutive_failures = 2",
        options=(f"--logger={LOGGER}",),
    )
    for _ in range(6):
        with urllib.request.urlopen(lb.url + "/", timeout=5) as response:
            assert response.status == 200
    assert _post(lb, "/api/backends/web1/drain", "W" * 32) == 403
    assert _post(lb, "/api/backends/web1/drain", TOKEN) == 200
    lb.proc.terminate()
    assert lb.proc.wait(timeout=15) == 0

    text = lb.log.read_text()
    assert TOKEN not in text
    lines: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
    for line in lines:
        assert {"time", "ts", "level", "namespace", "message"} <= line.keys(), line
    messages = [line["message"] for line in lines]
    assert any(m.startswith("twistd ") and "starting up" in m for m in messages)
    ejected = [
        line
        for line in lines
        if line.get("backend") == "dead" and line.get("state") == "ejected"
    ]
    assert ejected and ejected[0]["level"] == "info", messages
    assert ejected[0]["namespace"].startswith("txlb.core.registry"), ejected
    assert "2 consecutive failures" in ejected[0]["reason"]
    unreachable = [line for line in lines if "backend unreachable" in line["message"]]
    assert unreachable and unreachable[0]["level"] == "warn"
    assert "refused" in unreachable[0]["why"]
    [admin] = [line for line in lines if line.get("action") == "drain"]
    assert admin["backend"] == "web1"
    assert admin["who"].startswith("admin from 127.0.0.1")
    assert any("Server Shut Down" in m for m in messages)
