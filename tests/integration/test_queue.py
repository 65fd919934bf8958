"""
Backend protection end to end: a real C{twistd txlb} in front of a real
slow demo backend with C{max_connections = 2}.  Requests beyond the limit
wait in txlb's queue (never more than 2 at the backend) and are all served;
with a short C{queue_timeout} or a full queue they get 503 with Retry-After.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import (
    TWISTD,
    Backend,
    Balancer,
    Processes,
    free_port,
)


def _start(
    processes: Processes, tmp_path: Path, backend: Backend, txlb: str
) -> Balancer:
    port = free_port()
    ini = tmp_path / "lb.ini"
    ini.write_text(
        f"[txlb]\nlisten = tcp:{port}:interface=127.0.0.1\nshutdown_timeout = 1s\n"
        f"access_log = {tmp_path / 'access.log'}\n{txlb}\n"
        f"[backend:{backend.name}]\naddress = 127.0.0.1:{backend.port}\n"
        "max_connections = 2\n"
    )
    argv = [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(ini)]
    proc = processes.start("txlb", argv, port)
    return Balancer(proc, port, tmp_path / "txlb.log")


def _concurrently(port: int, count: int) -> list[tuple[int, str, bytes]]:
    """C{count} GETs at once, one connection each: (status, Retry-After, body)."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start.wait()
        try:
            conn.request("GET", f"/queued/{i}")
            response = conn.getresponse()
            results[i] = (
                response.status,
                response.getheader("Retry-After", ""),
                response.read(),
            )
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r is not None for r in results), results
    return results


def _sampling(
    balancer: Balancer, backend: Backend, done: threading.Event
) -> Callable[[], list[tuple[int, int, int]]]:
    """
    Sample (txlb active, txlb queued, backend in service) until C{done};
    the returned function waits for the sampler and gives the samples.
    """
    samples: list[tuple[int, int, int]] = []

    def run() -> None:
        while not done.is_set():
            totals = balancer.stats()["totals"]
            in_service = backend.stats()["in_service"]
            samples.append((totals["active_connections"], totals["queued"], in_service))
            time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()

    def result() -> list[tuple[int, int, int]]:
        thread.join(10)
        return samples

    return result


def _settled(balancer: Balancer) -> dict[str, Any]:
    """The totals once nothing is in flight or waiting (at most 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        totals = balancer.stats()["totals"]
        if (totals["active_connections"], totals["queued"]) == (0, 0):
            return totals  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, totals
        time.sleep(0.1)


def test_requests_beyond_max_connections_wait_and_are_served(
    processes: Processes, tmp_path: Path, demo_backend: Callable[..., Backend]
) -> None:
    """
    10 concurrent slow requests to a backend with max_connections = 2: all
    get 200, the backend never serves more than 2 at once, the stats show
    the queue while they wait, and afterwards nothing is active or queued.
    """
    backend = demo_backend("slow", delay="400ms")
    balancer = _start(processes, tmp_path, backend, "queue_timeout = 20s")
    stats = balancer.stats()
    assert stats["backends"][0]["max_connections"] == 2
    assert stats["totals"]["queued"] == 0

    done = threading.Event()
    samples = _sampling(balancer, backend, done)
    try:
        results = _concurrently(balancer.port, 10)
    finally:
        done.set()
    seen = samples()

    assert [status for status, _, _ in results] == [200] * 10
    assert seen, "no stats sampled"
    assert max(active for active, _, _ in seen) <= 2, seen
    assert max(in_service for _, _, in_service in seen) <= 2, seen
    assert max(queued for _, queued, _ in seen) >= 1, seen
    assert backend.stats()["completed"] == 10
    totals = _settled(balancer)
    # 2 went straight to the backend; the others waited (some may have
    # arrived after a slot was free on a slow machine).
    assert 1 <= totals["queued_total"] <= 8, totals
    assert (totals["queue_timeouts"], totals["queue_full_rejections"]) == (0, 0)


def test_queue_timeout_and_full_queue_answer_503(
    processes: Processes, tmp_path: Path, demo_backend: Callable[..., Backend]
) -> None:
    """
    With a 2 s backend, queue_timeout = 500ms and queue_size = 2, 6
    concurrent requests: 2 are served, the rest get 503 with Retry-After,
    because the queue timed out or was full, as the counters say; then
    nothing is active or queued.
    """
    backend = demo_backend("slower", delay="2s")
    balancer = _start(
        processes, tmp_path, backend, "queue_timeout = 500ms\nqueue_size = 2"
    )
    started = time.monotonic()
    results = _concurrently(balancer.port, 6)
    elapsed = time.monotonic() - started

    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 503, 503, 503, 503], results
    refused = [(retry, body) for status, retry, body in results if status == 503]
    assert all(retry for retry, _ in refused), refused
    timed_out = sum(1 for _, body in refused if b"queue timed out" in body)
    full = sum(1 for _, body in refused if b"queue full" in body)
    assert timed_out + full == 4, refused
    assert timed_out >= 1 and full >= 1, refused
    totals = _settled(balancer)
    assert totals["queue_timeouts"] == timed_out
    assert totals["queue_full_rejections"] == full
    assert totals["queued_total"] == timed_out
    assert backend.stats()["requests"] == 2
    assert elapsed < 10


def test_queued_client_with_a_body_that_leaves_is_noticed_at_once(
    processes: Processes, tmp_path: Path, demo_backend: Callable[..., Backend]
) -> None:
    """
    Two slow GETs hold both slots; a POST whose body is still coming waits
    in the queue; its client closes: it leaves the queue at once (not when
    a slot frees 3 s later), the access log says 499 and the backend never
    sees it.
    """
    import socket

    backend = demo_backend("slowest", delay="3s")
    balancer = _start(processes, tmp_path, backend, "queue_timeout = 30s")
    holders = []
    for _ in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", balancer.port, timeout=30)
        conn.request("GET", "/hold")
        holders.append(conn)
    deadline = time.monotonic() + 5
    while balancer.stats()["totals"]["active_connections"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    post = socket.create_connection(("127.0.0.1", balancer.port))
    post.sendall(
        b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\nfirst bytes"
    )
    deadline = time.monotonic() + 5
    while balancer.stats()["totals"]["queued"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    post.close()
    left = time.monotonic()
    while balancer.stats()["totals"]["queued"]:
        assert time.monotonic() - left < 1.0, "the queued client's leaving not seen"
        time.sleep(0.02)
    assert balancer.stats()["totals"]["active_connections"] == 2
    for conn in holders:
        assert conn.getresponse().status == 200
        conn.close()
    _settled(balancer)
    assert backend.stats()["requests"] == 2
    lines = (tmp_path / "access.log").read_text().splitlines()
    deadline = time.monotonic() + 5
    while len(lines) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = (tmp_path / "access.log").read_text().splitlines()
    assert any(" 499 " in line and "/upload" in line for line in lines), lines
