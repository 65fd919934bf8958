"""
End to end: the real ``twistd -n txlb`` in front of real demo backends,
driven by real clients (http.client, ApacheBench, Siege).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from backends.streams import pattern
from tests.integration.conftest import Backend, Balancer, free_port

GIB = 1 << 30


def get(balancer: Balancer, path: str, **headers: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", balancer.port, timeout=30)
    conn.request("GET", path, headers=headers)
    return conn.getresponse()


def assert_no_leaks(balancer: Balancer) -> None:
    stats = balancer.stats()
    assert [b["active_connections"] for b in stats["backends"]] == [0] * len(
        stats["backends"]
    ), stats


def test_sequential_requests_rotate(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """300 sequential keep-alive requests give each of 3 backends exactly 100."""
    backends = [demo_backend(f"web{i}") for i in range(3)]
    lb = balancer([(b.name, b.port) for b in backends])
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    seen = []
    for _ in range(300):
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        seen.append(response.getheader("X-Backend"))
        response.read()
    assert seen[:3] == ["web0", "web1", "web2"]
    assert [b.stats()["requests"] for b in backends] == [100, 100, 100]
    assert [b["total_requests"] for b in lb.stats()["backends"]] == [100, 100, 100]
    assert_no_leaks(lb)

    # The access log (JSON lines, written by its own thread) has every one.
    access_log = lb.log.parent / "access.log"
    deadline = time.monotonic() + 5
    records: list[dict[str, object]] = []
    while len(records) < 300 and time.monotonic() < deadline:
        time.sleep(0.1)
        records = [json.loads(line) for line in access_log.read_text().splitlines()]
    proxied = [r for r in records if r["uri"] == "/"]
    assert len(proxied) == 300, len(proxied)
    assert [r["backend"] for r in proxied[:3]] == ["web0", "web1", "web2"]
    assert {r["status"] for r in proxied} == {200}
    assert all(0 <= r["upstream_time"] <= r["total_time"] for r in proxied)  # type: ignore[operator]


def run_tool(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is not installed: run scripts/install-system-deps.sh")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout + done.stderr


@pytest.fixture
def uneven(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> Iterator[tuple[list[Backend], Balancer]]:
    """Three backends of different speeds behind one balancer (names of one
    length: ab counts a body of another length as a failed request)."""
    backends = [
        demo_backend("web1", delay="2ms"),
        demo_backend("web2", delay="10ms"),
        demo_backend("web3", delay="50ms"),
    ]
    yield backends, balancer([(b.name, b.port) for b in backends])


def test_ab_least_connections(uneven: tuple[list[Backend], Balancer]) -> None:
    """Under ab -c 30 (HTTP/1.0, a connection per request) nothing fails and
    the faster a backend, the more requests it gets."""
    backends, lb = uneven
    out = run_tool(["ab", "-q", "-n", "3000", "-c", "30", f"{lb.url}/"])
    assert re.search(r"Complete requests:\s+3000", out), out
    assert re.search(r"Failed requests:\s+0\b", out), out
    assert "Non-2xx" not in out, out
    fast, medium, slow = (b.stats()["requests"] for b in backends)
    assert fast + medium + slow == 3000
    assert fast > medium > slow, (fast, medium, slow)
    assert slow < 3000 / 3, (fast, medium, slow)
    assert_no_leaks(lb)


def test_siege_keepalive(uneven: tuple[list[Backend], Balancer]) -> None:
    """Siege (HTTP/1.1 keep-alive, 20 users) sees no failure; least
    connections favours the fast backend."""
    backends, lb = uneven
    out = run_tool(
        ["siege", "-b", "-c", "20", "-r", "50", "--no-parser", "-j", f"{lb.url}/"]
    )
    result = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert result["transactions"] == 1000, out
    assert result["failed_transactions"] == 0, out
    fast, medium, slow = (b.stats()["requests"] for b in backends)
    assert fast > medium > slow, (fast, medium, slow)
    assert_no_leaks(lb)


def test_forwarding_headers(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """The backend sees Host, X-Forwarded-*, and no hop-by-hop headers; the
    client sees the backend's Server and Date once each."""
    backend = demo_backend("web1")
    lb = balancer([(backend.name, backend.port)])
    response = get(
        lb,
        "/_demo/echo?a=1",
        Host="shop.example",
        Connection="keep-alive, X-Secret",
        **{"X-Secret": "s", "X-Forwarded-For": "203.0.113.9", "Keep-Alive": "300"},
    )
    assert response.status == 200
    assert response.headers.get_all("Server") == ["txlb-demo-backend"]
    assert len(response.headers.get_all("Date") or []) == 1
    echo = json.loads(response.read())
    headers = {name.lower(): value for name, value in echo["headers"]}
    assert echo["uri"] == "/_demo/echo?a=1"
    assert headers["host"] == "shop.example"
    # trusted_proxies is empty: the client's own X-Forwarded-For is dropped.
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "shop.example"
    for hop in ("x-secret", "keep-alive", "connection", "te", "transfer-encoding"):
        assert hop not in headers, headers


def test_gib_streams_both_ways_with_bounded_memory(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """1 GiB down and 1 GiB up pass through intact while the balancer's
    peak memory stays far below the body size."""
    backend = demo_backend("bulk")
    lb = balancer([(backend.name, backend.port)])
    baseline = lb.peak_memory_mib()

    response = get(lb, f"/_demo/bytes?n={GIB}")
    assert response.status == 200
    digest, length = hashlib.sha256(), 0
    while piece := response.read(1 << 20):
        assert piece == pattern(length, len(piece))
        digest.update(piece)
        length += len(piece)
    assert length == GIB

    block = pattern(0, 1 << 20)
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=120)
    conn.request(
        "PUT",
        "/_demo/upload",
        body=(block for _ in range(GIB // len(block))),
        headers={"Content-Length": str(GIB)},
    )
    upload = conn.getresponse()
    assert upload.status == 200
    assert json.loads(upload.read()) == {"length": GIB, "sha256": digest.hexdigest()}

    peak = lb.peak_memory_mib()
    assert peak - baseline < 64, (baseline, peak)
    assert_no_leaks(lb)


def test_502_when_backend_unreachable(balancer: Callable[..., Balancer]) -> None:
    """A backend nobody listens on gives 502."""
    lb = balancer([("dead", free_port())], extra="retries = 0")
    response = get(lb, "/")
    assert response.status == 502
    assert_no_leaks(lb)


def test_failover_to_live_backend(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """Requests whose backend refuses the connection are served by another."""
    live = demo_backend("live")
    lb = balancer([("dead", free_port()), (live.name, live.port)])
    for _ in range(10):
        response = get(lb, "/")
        assert response.status == 200
        assert response.getheader("X-Backend") == "live"
    assert_no_leaks(lb)


def test_504_then_503_when_unhealthy(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """A slow answer gives 504 after backend_timeout; a backend failing its
    health checks leaves rotation, giving 503 with Retry-After, and comes back."""
    backend = demo_backend("web1")
    lb = balancer(
        [(backend.name, backend.port)],
        extra="backend_timeout = 500ms",
        health="interval = 200ms\ntimeout = 100ms\nrise = 1\nfall = 1",
    )
    started = time.monotonic()
    response = get(lb, "/_demo/sleep?ms=5000")
    assert response.status == 504
    assert 0.4 < time.monotonic() - started < 3

    backend.control("health", "fail")
    deadline = time.monotonic() + 5
    while lb.stats()["backends"][0]["healthy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    response = get(lb, "/")
    assert response.status == 503
    assert response.getheader("Retry-After") == "1"

    backend.control("health", "ok")
    deadline = time.monotonic() + 5
    while not lb.stats()["backends"][0]["healthy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get(lb, "/").status == 200
    assert_no_leaks(lb)


def test_bad_config_exits_before_binding(tmp_path: object) -> None:
    """A wrong lb.ini stops twistd with one line naming file, section and key,
    and a non-zero exit, before any port is bound."""
    from pathlib import Path

    from tests.integration.conftest import TWISTD

    port = free_port()
    ini = Path(str(tmp_path)) / "bad.ini"
    ini.write_text(f"[txlb]\nlisten = tcp:{port}\n[health]\ninterval = soon\n")
    done = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(ini)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"txlb: {ini}: [health] interval: 'soon' is not valid; expected a positive"
        " duration such as 500ms, 2s, 1m or plain seconds"
    ], done.stderr
