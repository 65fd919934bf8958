"""
The chaos soak (``make soak``; ``make test`` runs a 60-second one through
tests/integration/test_soak.py): a real ``twistd -n txlb`` under sustained
keep-alive GET load while its backends are killed and restarted on new
ports, lb.ini is reloaded every few seconds with backends added, removed
and re-weighted, and hostile clients mix in slowloris heads, conflicting
framing and abandoned connections (scripts/soak_fleet.py,
scripts/soak_load.py).

The contract it checks, and prints with its figures:

  - not one GET failed (scripts/soak_load.py says what counts);
  - every hostile act got what txlb promises (400/501 and a close for bad
    framing, 408 within header_timeout for a slowloris head);
  - every drained backend was dropped (no lease held), and at the end
    every backend has 0 active requests, nothing is queued and no client
    connection is open;
  - txlb's open descriptors, once the backends are stopped, are what they
    were before any backend or client connected; under load they stay
    within C{FD_SLACK} of where they were after the warm-up;
  - txlb logged no traceback, rejected no reload, and exits 0 on SIGTERM;
  - with C{--rss-bound}: resident memory grew less than that after the
    warm-up (median of the last minute against the minute after warm-up),
    judged on runs at least C{RSS_MIN_SPAN} longer than the warm-up; a
    shorter run compares its last and first post-warm-up quarters and
    reports the growth without a bound.

  python scripts/soak.py [--seconds 600] [--warmup 60] [--clients 16]
      [--rss-bound 10] [--json report.json] [--workdir DIR] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from soak_fleet import Chaos, Fleet, Sampler, process_figures
from soak_load import Getter, Hostile, Slowloris, Tally

HEADER_TIMEOUT = 5.0
FD_SLACK = 32
# The RSS bound is judged on runs this much longer than the warm-up.
RSS_MIN_SPAN = 180.0
INITIAL_BACKENDS = 4
SLOWLORIS = 4


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="txlb-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(workdir, HEADER_TIMEOUT)
    try:
        report = run(fleet, args)
    finally:
        fleet.stop_backends()
        fleet.stop_txlb()
    report["workdir"] = str(workdir)
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(summary(report))
    return 0 if not report["broken"] else 1


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="txlb's chaos soak")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rss-bound", type=float, default=0, help="MiB; 0: none")
    parser.add_argument("--chaos-period", type=float, default=2.5)
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--workdir", help="lb.ini and the logs (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def run(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    fleet.members = [fleet.new_member(start=False) for _ in range(INITIAL_BACKENDS)]
    fleet.start_txlb()
    # Before any backend listens (the probes are refused) or any client,
    # once the reactor has answered a request (all it sets up is set up).
    fleet.stats()
    fd_baseline = _usual_fds(fleet)
    for member in fleet.members:
        fleet.start(member)
    _wait(lambda: fleet.stats()["totals"]["available"] == INITIAL_BACKENDS, 15)

    tally = Tally()
    stop_load, stop_chaos = threading.Event(), threading.Event()
    stop_sampling = threading.Event()
    sampler = Sampler(fleet, stop_sampling, 2.0)
    chaos = Chaos(fleet, tally, stop_chaos, args.seed, args.chaos_period)
    load: list[threading.Thread] = [
        Getter(i, fleet.port, tally, stop_load) for i in range(args.clients)
    ]
    load += [
        Slowloris(i, fleet.port, tally, stop_load, HEADER_TIMEOUT)
        for i in range(SLOWLORIS)
    ]
    load.append(Hostile(fleet.port, tally, stop_load, args.seed, 0.2))
    started = time.monotonic()
    for thread in [sampler, *load, chaos]:
        thread.start()
    while (left := args.seconds - (time.monotonic() - started)) > 0:
        time.sleep(min(left, 30))
        if left > 30:
            print(f"soak: {time.monotonic() - started:.0f}s {_progress(tally, fleet)}")

    stop_chaos.set()
    chaos.join()
    stop_load.set()
    for thread in load:
        thread.join(timeout=GRACE_JOIN)
    stuck_threads = [t.name for t in load if t.is_alive()]
    # The drains still under way finish (or are counted stuck).
    deadline = time.monotonic() + 35
    while chaos.leaving and time.monotonic() < deadline:
        chaos.reap()
        time.sleep(0.5)
    chaos.reap()
    end = _settled(fleet)
    stop_sampling.set()
    sampler.join()
    fleet.stop_backends()
    fd_end = _usual_fds(fleet)
    code = fleet.stop_txlb()
    log = fleet.log.read_text(errors="replace")
    return assess(
        args,
        tally,
        sampler.samples,
        end=end,
        fd_baseline=fd_baseline,
        fd_end=fd_end,
        exit_code=code,
        reloads=fleet.reloads,
        backends_started=len(fleet.all),
        stuck_threads=stuck_threads,
        log=log,
    )


GRACE_JOIN = 40.0


def _wait(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not true within {seconds:g}s")
        time.sleep(0.1)


def _usual_fds(fleet: Fleet) -> int:
    """
    The descriptor count seen most often over two seconds (a health probe
    may be connecting, briefly, to a backend that is not there).
    """
    seen = []
    for _ in range(10):
        time.sleep(0.2)
        seen.append(int(process_figures(fleet)["fds"]))
    return min(statistics.multimode(seen))


def _settled(fleet: Fleet) -> dict[str, Any]:
    """The stats once nothing is left in flight (or after 10 s, as they are)."""
    deadline = time.monotonic() + 10
    while True:
        stats = fleet.stats()
        active = {b["name"]: b["active_connections"] for b in stats["backends"]}
        idle = (
            not any(active.values())
            and stats["totals"]["queued"] == 0
            and stats["clients"]["connections"] == 0
        )
        if idle or time.monotonic() > deadline:
            return {
                "active": active,
                "queued": stats["totals"]["queued"],
                "client_connections": stats["clients"]["connections"],
                "rejected": stats["clients"]["rejected"],
                "total_requests": stats["totals"]["total_requests"],
                "failures": stats["totals"]["failures"],
            }
        time.sleep(0.2)


def _progress(tally: Tally, fleet: Fleet) -> str:
    c = tally.counts
    failed = sum(v for k, v in c.items() if k.startswith("get_failed"))
    return f"GETs ok {c['get_ok']} failed {failed}; {fleet.reloads} reloads"


def _window(
    samples: list[dict[str, float]], key: str, start: float, end: float
) -> list[float]:
    return [s[key] for s in samples if start <= s["t"] < end and key in s]


def assess(
    args: argparse.Namespace,
    tally: Tally,
    samples: list[dict[str, float]],
    **end: Any,
) -> dict[str, Any]:
    """The figures of the run, and what in the contract broke."""
    c = tally.counts
    broken: list[str] = []
    failed = {k: v for k, v in c.items() if k.startswith("get_failed")}
    failed.update(
        {k: c[k] for k in ("get_connect_failed", "get_unsolicited_bytes") if c[k]}
    )
    if sum(failed.values()):
        broken.append(f"failed GETs: {failed}")
    if not c["get_ok"]:
        broken.append("no GET succeeded")
    for bad in (
        "framing_unexpected",
        "slowloris_overdue",
        "slowloris_unexpected",
        "abandon_response_short",
        "hostile_connect_failed",
        "slowloris_connect_failed",
        "drain_stuck",
        "chaos_error",
    ):
        if c[bad]:
            broken.append(f"{bad}: {c[bad]}")
    state = end["end"]
    if any(state["active"].values()) or state["queued"] or state["client_connections"]:
        broken.append(f"left in flight at the end: {state}")
    if end["fd_end"] != end["fd_baseline"]:
        broken.append(
            f"descriptors {end['fd_end']} at the end, {end['fd_baseline']} before"
        )
    # Windows after the warm-up: a minute each, or quarters of a short run.
    span = min(60.0, (args.seconds - args.warmup) / 4)
    first = (args.warmup, args.warmup + span)
    last = (args.seconds - span, args.seconds + 1)
    fds_first = _window(samples, "fds", *first)
    fds_load = _window(samples, "fds", args.warmup, args.seconds + 1)
    if fds_first and fds_load and max(fds_load) > max(fds_first) + FD_SLACK:
        broken.append(f"descriptors rose to {max(fds_load)} from {max(fds_first)}")
    rss_first = _window(samples, "rss_mib", *first)
    rss_last = _window(samples, "rss_mib", *last)
    growth = None
    if rss_first and rss_last:
        growth = round(statistics.median(rss_last) - statistics.median(rss_first), 2)
    judged = bool(args.rss_bound) and args.seconds >= args.warmup + RSS_MIN_SPAN
    if judged:
        if growth is None:
            broken.append("no RSS samples to judge")
        elif growth >= args.rss_bound:
            broken.append(f"RSS grew {growth} MiB (bound {args.rss_bound} MiB)")
    log = end["log"]
    tracebacks = log.count("Traceback")
    rejected_reloads = log.count("reload rejected")
    if tracebacks:
        broken.append(f"{tracebacks} tracebacks in txlb's log")
    if rejected_reloads:
        broken.append(f"{rejected_reloads} reloads rejected")
    if end["exit_code"] != 0:
        broken.append(f"txlb exited {end['exit_code']} on SIGTERM")
    if end["stuck_threads"]:
        broken.append(f"client threads still running: {end['stuck_threads']}")
    rss = [s["rss_mib"] for s in samples]
    return {
        "seconds": args.seconds,
        "warmup": args.warmup,
        "clients": args.clients,
        "counts": dict(sorted(c.items())),
        "failures": tally.failures,
        "get_latency_s": {
            "p50": _round(tally.percentile(0.5)),
            "p99": _round(tally.percentile(0.99)),
            "max": _round(tally.latency_max),
        },
        "reloads": end["reloads"],
        "backends_started": end["backends_started"],
        "end": state,
        "fds": {
            "baseline": end["fd_baseline"],
            "end": end["fd_end"],
            "under_load_min": min(fds_load) if fds_load else None,
            "under_load_max": max(fds_load) if fds_load else None,
            "first_window_max": max(fds_first) if fds_first else None,
        },
        "rss_mib": {
            "after_warmup": statistics.median(rss_first) if rss_first else None,
            "last": statistics.median(rss_last) if rss_last else None,
            "growth": growth,
            "bound": args.rss_bound if judged else None,
            "max": max(rss) if rss else None,
            "window_seconds": span,
        },
        "txlb_log": {"tracebacks": tracebacks, "reloads_rejected": rejected_reloads},
        "exit_code": end["exit_code"],
        "samples": samples,
        "broken": broken,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summary(r: dict[str, Any]) -> str:
    c = r["counts"]
    failed = sum(v for k, v in c.items() if k.startswith("get_failed"))
    lines = [
        f"soak: {r['seconds']:g}s, {r['clients']} keep-alive GET clients",
        f"  GETs: {c.get('get_ok', 0)} ok, {failed} failed; latency p50"
        f" {r['get_latency_s']['p50']}s p99 {r['get_latency_s']['p99']}s"
        f" max {r['get_latency_s']['max']}s; reconnects after Connection: close"
        f" {c.get('get_closed_after_response', 0)}, between requests"
        f" {c.get('get_closed_between_requests', 0)}",
        f"  chaos: {r['reloads']} reloads; {c.get('chaos_reweights', 0)} re-weights,"
        f" {c.get('chaos_adds', 0)} adds, {c.get('chaos_removes', 0)} removes,"
        f" {c.get('chaos_replaces', 0)} drain-and-replace,"
        f" {c.get('chaos_hard_kills', 0)} hard kills;"
        f" {r['backends_started']} backend processes started;"
        f" {c.get('drained_and_dropped', 0)} backends drained and dropped",
        f"  hostile: {c.get('framing_refused', 0)} conflicting framing refused,"
        f" {c.get('slowloris_cut', 0)} slowloris heads cut with 408,"
        f" abandoned: {c.get('abandoned_at_connect', 0)} at connect,"
        f" {c.get('abandoned_mid_head', 0)} mid-head,"
        f" {c.get('abandoned_before_answer', 0)} before the answer,"
        f" {c.get('abandoned_mid_response', 0)} mid-response,"
        f" {c.get('abandoned_after_stall', 0)} after stalling",
        f"  end: {r['end']}",
        f"  descriptors: {r['fds']}",
        f"  RSS MiB: {r['rss_mib']}",
        f"  txlb log: {r['txlb_log']}; exit code {r['exit_code']}",
        "  contract: "
        + ("held" if not r["broken"] else "BROKEN: " + "; ".join(r["broken"])),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
