"""
Scenario 14 of C{make bench}: txlb with C{workers = 1, 2, ...} (the counts
C{--workers} gives, so a bigger machine draws the scaling curve), none of
the processes pinned, on the three nginx backends:

  - C{14-keepalive}: wrk -c64 straight to txlb;
  - C{14-nginx}: wrk -c16 to one nginx worker in front, which keeps its
    few upstream keep-alive connections to txlb (the deployment's shape);
  - C{14-short}: ab -c50 without keep-alive (a connection per request).

Each run records req/s, txlb's CPU per request (the supervisor and every
worker), what the load took (wrk or ab, and the nginx processes: backends
and the front one) per request, and each worker's share of the requests
(from C{/api/server-stats}, the spread the issue asks to show).
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

from peers import Target
from procs import cpu_seconds, get_json

__all__ = ["CELLS", "spread", "with_load_cpu"]

CELLS = {
    "14-keepalive": ("keep-alive, wrk c=64 straight to txlb", "wrk -t1 -c64"),
    "14-nginx": (
        "behind nginx's few upstream keep-alive connections, wrk c=16 to nginx",
        "wrk -t1 -c16 to nginx, keepalive 64 to txlb",
    ),
    "14-short": ("a connection per request, ab c=50", "ab -c50 (no keep-alive)"),
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _worker_responses(t: Target) -> dict[int, int]:
    assert t.stats_url
    stats = get_json(t.stats_url)
    return {w["index"]: w["responses"] for w in stats.get("workers", [])}  # type: ignore[union-attr]


def with_load_cpu(
    run: Callable[[Target, float], dict[str, Any]],
    loaders: Callable[[Target], list[int]],
) -> Callable[[Target, float], dict[str, Any]]:
    """
    C{run}, also recording the CPU the load took per request: the load
    generator (a child of this process) and the C{loaders} (nginx pids).
    """

    def measured(t: Target, seconds: float) -> dict[str, Any]:
        pids = loaders(t)
        before = _children_cpu() + sum(cpu_seconds(p) for p in pids)
        r = run(t, seconds)
        used = _children_cpu() + sum(cpu_seconds(p) for p in pids) - before
        if r.get("requests"):
            r["load_cpu_us_per_req"] = round(used * 1e6 / r["requests"], 2)
        return r

    return measured


def spread() -> tuple[
    Callable[[Target], Any], Callable[[Target, Any, dict[str, Any]], None]
]:
    """Before and after hooks recording each worker's share of a run."""

    def before(t: Target) -> Any:
        return _worker_responses(t)

    def after(t: Target, old: Any, r: dict[str, Any]) -> None:
        new = _worker_responses(t)
        done = {i: new.get(i, 0) - old.get(i, 0) for i in new}
        total = sum(done.values()) or 1
        r["worker_share"] = {
            str(i): round(n / total, 3) for i, n in sorted(done.items())
        }

    return before, after


def markdown(cell: dict[str, Any]) -> list[str]:
    """Scenario 14's table: throughput, CPU per request, the load's, the spread."""
    out = [
        "| workers | req/s | p99 | txlb CPU µs/req (all processes) |"
        " load CPU µs/req | share of requests per worker | errors |",
        "|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name in sorted(cell["peers"], key=lambda n: int(n.split("-w")[-1])):
        runs = cell["peers"][name].get("runs", [])
        m = cell["peers"][name].get("median", {})
        shares = [r.get("worker_share", {}) for r in runs]
        loads = sorted(
            r["load_cpu_us_per_req"] for r in runs if "load_cpu_us_per_req" in r
        )
        load = loads[len(loads) // 2] if loads else None
        last = shares[-1] if shares else {}
        spread = " / ".join(f"{v:.0%}" for v in last.values())
        out.append(
            f"| {name.split('-w')[-1]} | {m.get('rps', 0):,.0f} |"
            f" {m.get('p99_ms', 0):.1f} ms | {m.get('lb_cpu_us_per_req', 0):.1f} |"
            f" {load if load is not None else '-'} | {spread} |"
            f" {m.get('errors_total', 0)} |"
        )
    return out
