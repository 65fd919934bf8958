"""
Sticky sessions, consistent hashing and rate limits end to end: a real
C{twistd txlb} in front of three demo backends (C{python -m backends}),
driven over keep-alive connections; the backends' own counters say where
the requests went.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import Backend, Balancer


def get(
    conn: http.client.HTTPConnection, path: str = "/", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def requests_of(backends: list[Backend]) -> dict[str, int]:
    return {b.name: b.stats()["requests"] for b in backends}


def three(demo_backend: Callable[..., Backend]) -> list[Backend]:
    return [demo_backend(name) for name in ("a", "b", "c")]


def opened_together(port: int, count: int) -> list[http.client.HTTPConnection]:
    """C{count} connections open at once: the workers' accept balancing
    splits them (one at a time, each closed before the next, they all go to
    whichever worker wakes first, both having none)."""
    conns = [
        http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(count)
    ]
    for conn in conns:
        conn.connect()
    return conns


def owned_by(port: int, conns: list[http.client.HTTPConnection]) -> set[int | None]:
    """The pids of the workers holding C{conns} (answered, so accepted);
    then closes them."""
    from tests.integration.test_workers import owners

    mine = owners(port)
    pids = {mine.get(conn.sock.getsockname()[1]) for conn in conns}
    for conn in conns:
        conn.close()
    return pids


def test_a_stuck_client_stays_and_falls_back(
    demo_backend: Callable[..., Backend],
    balancer: Callable[..., Balancer],
    tmp_path: Path,
) -> None:
    """The first response sets the cookie; 100 requests with it go to one
    backend, which never sees the cookie; a reload that drops that backend
    sends the client elsewhere, stuck anew."""
    backends = three(demo_backend)
    lb = balancer([(b.name, b.port) for b in backends], "sticky = cookie:SRV\n")
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    status, headers, _ = get(conn)
    assert status == 200
    cookie = headers["set-cookie"]
    assert cookie.endswith("; Path=/; HttpOnly; SameSite=Lax"), cookie
    pair = cookie.split(";", 1)[0]
    first = headers["x-backend"]
    before = requests_of(backends)
    for _ in range(100):
        status, headers, _ = get(conn, Cookie=f"theme=dark; {pair}")
        assert (status, headers["x-backend"]) == (200, first)
        assert "set-cookie" not in headers
    after = requests_of(backends)
    assert {n: after[n] - before[n] for n in after} == {
        n: 100 if n == first else 0 for n in after
    }
    _, _, body = get(conn, "/_demo/echo", Cookie=f"theme=dark; {pair}")
    sent = dict(json.loads(body)["headers"])
    assert sent.get("Cookie") == "theme=dark", sent
    stats = lb.stats()
    assert stats["sticky"]["hits"] == 101
    assert stats["sticky"]["misses"] == 1

    # Reload without the stuck backend: it drains; the cookie falls back.
    ini = tmp_path / "lb.ini"
    ini.write_text(ini.read_text().replace(f"[backend:{first}]", "[backend:gone]", 1))
    lb.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while first in {b["name"] for b in lb.stats()["backends"]}:
        assert time.monotonic() < deadline, "the reload did not drop the backend"
        time.sleep(0.05)
    status, headers, _ = get(conn, Cookie=pair)
    second = headers["x-backend"]
    assert status == 200 and second not in (first, "gone")
    new_pair = headers["set-cookie"].split(";", 1)[0]
    assert new_pair != pair
    for _ in range(5):
        assert get(conn, Cookie=new_pair)[1]["x-backend"] == second
    conn.close()


def test_ten_thousand_users_within_the_bound(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """hash_key = header:X-User: 10,000 users over 16 keep-alive connections
    spread within hash_balance_factor of the mean; a user asked again goes
    to the same backend; the decision log never shows a user."""
    backends = three(demo_backend)
    lb = balancer(
        [(b.name, b.port) for b in backends],
        "algorithm = hash\nhash_key = header:X-User\n",
    )
    before = requests_of(backends)
    errors: list[Any] = []
    homes: dict[str, str] = {}

    def user_range(start: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=30)
        try:
            for i in range(start, 10_000, 16):
                status, headers, _ = get(conn, **{"X-User": f"user-{i}"})
                if status != 200:
                    errors.append(status)
                homes[f"user-{i}"] = headers["x-backend"]
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=user_range, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    took = time.monotonic() - started
    assert not errors, errors[:3]
    after = requests_of(backends)
    counts = {n: after[n] - before[n] for n in after}
    assert sum(counts.values()) == 10_000
    mean = 10_000 / 3
    assert max(counts.values()) <= 1.25 * mean, counts
    assert min(counts.values()) >= 0.75 * mean, counts
    assert Counter(homes.values()) == Counter(counts)

    # Sequentially (nothing else in flight, so the bound moves nobody):
    # each user's backend is the same every time.
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    again = {}
    for i in range(0, 10_000, 37):
        user = f"user-{i}"
        first = get(conn, **{"X-User": user})[1]["x-backend"]
        assert get(conn, **{"X-User": user})[1]["x-backend"] == first
        again[user] = first
    conn.close()
    # Under load the bound moved some (16 in flight over 3 backends: a
    # backend is at its bound, ceil(1.25 x 17 / 3) = 8, now and then); most
    # stayed home, where a random spread would leave a third.
    home = sum(1 for user, name in again.items() if homes[user] == name)
    assert home >= 0.6 * len(again), (home, len(again))
    with urllib.request.urlopen(lb.url + "/api/decisions?limit=300", timeout=5) as r:
        text = r.read().decode()
    decisions = json.loads(text)
    assert "user-" not in text
    keyed = [d for d in decisions["decisions"] if d.get("detail", {}).get("home")]
    assert keyed and keyed[0]["detail"]["key_name"] == "header:x-user"
    shares = [b["key_share"] for b in lb.stats()["backends"]]
    assert abs(sum(shares) - 1) < 0.01
    print(f"10,000 users in {took:.1f}s: {counts}; {home}/{len(again)} at home")


def test_rate_limit_answers_429_before_any_backend(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """Past its burst a client gets 429 with Retry-After and no backend
    counts the request; the stats and metrics count them."""
    backends = three(demo_backend)
    lb = balancer(
        [(b.name, b.port) for b in backends],
        "shutdown_timeout = 1s\n[ratelimit]\nrate = 0.5\nburst = 3\n",
    )
    before = requests_of(backends)
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    answers = [get(conn) for _ in range(12)]
    conn.close()
    statuses = [status for status, _, _ in answers]
    assert statuses[:3] == [200, 200, 200]
    assert set(statuses[3:]) == {429}, statuses
    for _, headers, body in answers[3:]:
        assert 1 <= int(headers["retry-after"]) <= 2, headers
        assert body == b"too many requests\n"
    after = requests_of(backends)
    assert sum(after[n] - before[n] for n in after) == 3
    limit = lb.stats()["ratelimit"]
    assert (limit["allowed"], limit["limited"]) == (3, 9)
    with urllib.request.urlopen(lb.url + "/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert "txlb_ratelimit_limited_total 9.0" in metrics


def test_two_workers_agree(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """With workers = 2, a cookie names the same backend in either worker and
    a user hashes to the same backend in either: on 40 connections open at
    once, which both workers serve."""
    from tests.integration.test_workers import serving

    backends = three(demo_backend)
    lb = balancer(
        [(b.name, b.port) for b in backends],
        "workers = 2\nalgorithm = hash\nhash_key = header:X-User\n"
        "sticky = cookie:SRV\n",
    )
    serving(lb)
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    _, headers, _ = get(conn, **{"X-User": "alice"})
    conn.close()
    pair = headers["set-cookie"].split(";", 1)[0]
    stuck = headers["x-backend"]
    conns = opened_together(lb.port, 40)
    for i, conn in enumerate(conns):
        _, headers, _ = get(conn, Cookie=pair, **{"X-User": f"user-{i}"})
        assert headers["x-backend"] == stuck
        _, headers, _ = get(conn, **{"X-User": "bob"})
        if i == 0:
            bob = headers["x-backend"]
        assert headers["x-backend"] == bob
    pids = owned_by(lb.port, conns)
    assert None not in pids and len(pids) == 2, pids


def test_two_workers_share_one_rate_limit(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """With workers = 2 a client gets one burst from the balancer, not one
    from each worker: 12 requests on 12 connections, which both workers
    serve, let 4 in.  The supervisor's stats and metrics sum both workers'
    rate-limit and sticky-cookie counts."""
    from tests.integration.test_workers import serving, wait_until

    backends = three(demo_backend)
    lb = balancer(
        [(b.name, b.port) for b in backends],
        "workers = 2\nsticky = cookie:SRV\nshutdown_timeout = 1s\n"
        # One token in 10 s: none comes back while the test runs.
        "[ratelimit]\nrate = 0.1\nburst = 4\nkey = header:X-Client\n",
    )
    serving(lb)
    before = requests_of(backends)
    conns = opened_together(lb.port, 12)
    statuses = [get(conn, **{"X-Client": "greedy"})[0] for conn in conns]
    pids = owned_by(lb.port, conns)
    assert None not in pids and len(pids) == 2, pids
    assert sorted(statuses) == [200] * 4 + [429] * 8, statuses
    after = requests_of(backends)
    assert sum(after[n] - before[n] for n in after) == 4
    # Sticky: a cookie set once, then honoured by either worker.
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    _, headers, _ = get(conn, **{"X-Client": "s0"})
    conn.close()
    pair = headers["set-cookie"].split(";", 1)[0]
    for i in range(10):
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        assert get(conn, Cookie=pair, **{"X-Client": f"s{i + 1}"})[0] == 200
        conn.close()

    def summed() -> bool:
        stats = lb.stats()
        limit, sticky = stats["ratelimit"], stats["sticky"]
        return (limit["allowed"], limit["limited"], sticky["hits"]) == (15, 8, 10)

    wait_until(summed)
    stats = lb.stats()
    assert stats["sticky"]["misses"] == 5  # the greedy client's four, s0
    assert stats["ratelimit"]["clients_tracked"] >= 12
    with urllib.request.urlopen(lb.url + "/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert "txlb_ratelimit_limited_total 8.0" in metrics
    assert "txlb_sticky_hits_total 10.0" in metrics
