"""
The fleet rehearsal's load and its measurements, run on the client host:

  python -m tests.integration.fleet_load --seconds 8 --concurrency 16 \\
      --target http://10.200.0.2:8080/ --target http://10.200.0.3:8080/ \\
      --backend http://10.200.0.11:9001 ...

Each of C{concurrency} clients holds one keep-alive connection to one
target, client I to target I mod N, as an L4 tier spreads connections over
the balancers, and sends GET requests one after another for C{seconds}
(bounded in count too).  Meanwhile every backend's own C{/_demo/stats} is
sampled every 25 ms: its requests in flight (in service and queued).
Prints one JSON object: requests, failures (and the first few), latency
percentiles in ms, and per backend its mean and peak in flight and its
requests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

MAX_REQUESTS_PER_CLIENT = 100_000
SAMPLE_EVERY = 0.025


def _client(
    url: str, until: float, latencies: list[float], failures: list[str]
) -> None:
    parts = urlsplit(url)
    conn: http.client.HTTPConnection | None = None
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.monotonic() >= until:
            break
        started = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(
                    parts.hostname, parts.port, timeout=10
                )
            conn.request("GET", parts.path or "/")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures.append(f"{url}: status {response.status}")
            else:
                latencies.append(time.monotonic() - started)
            if response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            failures.append(f"{url}: {type(e).__name__}: {e}")
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def _in_flight(url: str) -> tuple[int, int]:
    with urllib.request.urlopen(url + "/_demo/stats", timeout=5) as r:
        stats = json.load(r)
    return int(stats["in_service"]) + int(stats["queued"]), int(stats["requests"])


def _percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] * 1000, 2)


def run(
    targets: list[str], backends: list[str], concurrency: int, seconds: float
) -> dict[str, Any]:
    before = [_in_flight(b)[1] for b in backends]
    until = time.monotonic() + seconds
    latencies: list[float] = []
    failures: list[str] = []
    clients = [
        threading.Thread(
            target=_client,
            args=(targets[i % len(targets)], until, latencies, failures),
        )
        for i in range(concurrency)
    ]
    for t in clients:
        t.start()
    samples: list[list[int]] = []
    time.sleep(min(0.5, seconds / 4))  # past the ramp-up
    while time.monotonic() < until - 0.2:
        samples.append([_in_flight(b)[0] for b in backends])
        time.sleep(SAMPLE_EVERY)
    for t in clients:
        t.join()
    after = [_in_flight(b)[1] for b in backends]
    ordered = sorted(latencies)
    means = [
        round(sum(s[i] for s in samples) / len(samples), 2)
        for i in range(len(backends))
    ]
    return {
        "requests": len(latencies) + len(failures),
        "failures": len(failures),
        "failed": failures[:5],
        "latency_ms": {f"p{p}": _percentile(ordered, p) for p in (50, 90, 99)},
        "samples": len(samples),
        "in_flight_mean": means,
        "in_flight_peak": [max(s[i] for s in samples) for i in range(len(backends))],
        "imbalance": round(max(means) / min(means), 2) if min(means) > 0 else None,
        "served": [a - b for a, b in zip(after, before, strict=True)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", action="append", required=True)
    parser.add_argument("--backend", action="append", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(json.dumps(run(args.target, args.backend, args.concurrency, args.seconds)))


if __name__ == "__main__":
    main()
