"""
txlb against its peers, side by side, in one run (issue 7): C{make bench}.

  python bench/run.py                                  # everything (< 10 min)
  python bench/run.py --scenarios 1 --peers txlb,aiohttp,caddy
  python bench/run.py --scenarios 1,8 --runs 3 --quick

Set-up (bench-anchors.md): nginx backends with one worker, the load generator
and the idle-connection client on CPU 1; each balancer on CPU 0 with one
process / worker / thread.  All balancers of a scenario run at once and the
runs are interleaved (run 1 of every peer, then run 2 ...), so a burst of
noise from elsewhere on the machine hits one run of each peer rather than all
runs of one; the medians of the runs are reported.  Besides req/s, each run
records the balancer's own CPU time per request, which other load on the
machine moves much less.

A run of every scenario and peer without --quick writes bench/results/latest.*;
any other run writes bench/results/partial.* (git-ignored) unless --output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import churn
import load
import peers
import report
import workers as workers_bench
from peers import BALANCER_CPU, LOAD_CPU, ROOT, Context, Target
from procs import BenchError, Processes, cpu_seconds, get_json, rss_bytes

SCENARIOS = {
    1: "small responses, keep-alive (wrk c=64, c=256; and c=1 latency)",
    2: "ab without keep-alive (HTTP/1.0), c=50",
    3: "1 MiB responses, throughput (wrk c=16)",
    4: "heterogeneous backends (5/20/80 ms, capacity 4), wrk c=64",
    5: "one backend answering 500 at once among two healthy ones, wrk c=64",
    6: "selection cost: txlb with 1000 backends versus 3",
    7: "idle keep-alive client connections: resident memory",
    8: "TCP mode, small and 1 MiB, against HAProxy mode tcp",
    13: "discovery: 100 backends from DNS, one swapped a second, vs 100 in lb.ini",
    14: "worker processes: workers = 1, 2 (--workers), direct, behind nginx, short",
    15: "algorithms: CPU per pick of each at 3 and 1000 backends (no sockets);"
    " hash_key = header:X-User, 10,000 users, through the real proxy",
}

# Seconds of one run of each cell, chosen so that a full run (3 runs of every
# cell, a warm-up, every peer) stays under 10 minutes on a 2-core machine.
_SECONDS = {
    "1-c64": 3.0,
    "1-c256": 2.0,
    "1-c1": 1.0,
    "2-ab": 2.0,
    "3-1mib": 2.0,
    "4-hetero": 3.0,
    "5-failing": 2.0,
    "6-selection": 3.0,
    "8-tcp-small": 3.0,
    "8-tcp-1mib": 2.0,
    "13-churn": 3.0,
    "14-keepalive": 3.0,
    "14-nginx": 3.0,
    "14-short": 3.0,
    "15-picks": 0.5,  # CPU seconds per algorithm and pool size
    "15-hash": 3.0,
}

# Peers with no sensible place in a scenario.
_SKIP = {
    7: {
        "haproxy": "HAProxy runs with maxconn 4000 (global), as the anchors"
        " require on this machine, so it cannot hold 10,000 connections",
    },
}


@dataclass
class Settings:
    scenarios: list[int]
    peers: list[str]
    runs: int
    warmup: float
    seconds: dict[str, float]  # one run of each cell
    slow_warmup: float  # scenarios 4 and 5
    idle_connections: int
    workers: list[int]
    quick: bool
    full: bool


class Interrupted(Exception):
    pass


def _on_signal(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


_STARTED = time.monotonic()


def _log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:5.0f}s] {message}", flush=True)


class Bench:
    def __init__(self, ctx: Context, s: Settings, results: dict[str, Any]) -> None:
        self.ctx = ctx
        self.s = s
        self.results = results
        self.scripts = load.write_wrk_scripts(ctx.workdir)

    # Bookkeeping.

    def cell(
        self, cell_id: str, scenario: int, title: str, metric: str, load_: str
    ) -> dict[str, Any]:
        cell: dict[str, Any] = {
            "scenario": scenario,
            "title": title,
            "metric": metric,
            "load": load_,
            "peers": {},
        }
        self.results["cells"][cell_id] = cell
        return cell

    def fail(self, where: str, peer: str, error: BaseException) -> None:
        _log(f"FAILED {where} {peer}: {error}")
        self.results["failures"].append(
            {"where": where, "peer": peer, "error": str(error)}
        )

    def start(self, name: str, backends: list[int], **kw: Any) -> Target | None:
        try:
            target = peers.start_peer(self.ctx, name, backends, **kw)
        except BenchError as e:
            self.fail("start", name, e)
            return None
        label = kw.get("tag", "")
        self.results["peers"].setdefault(
            name + label,
            {"label": peers.LABELS.get(name, name), "config": target.config},
        )
        return target

    def stop(self, targets: dict[str, Target]) -> None:
        for t in targets.values():
            if t.proc is not None:
                self._scan_log(t)
                self.ctx.procs.stop(t.proc)

    def _scan_log(self, t: Target) -> None:
        """Keep txlb's unhandled errors and tracebacks for the report."""
        if not t.name.startswith("txlb") or t.proc is None:
            return
        text = t.proc.log.read_text(errors="replace")
        bad = [
            line
            for line in text.splitlines()
            if "Traceback" in line or "Unhandled" in line or "#critical" in line
        ]
        if bad:
            self.results["txlb_log_issues"].append(
                {"peer": t.name, "count": len(bad), "first": bad[:5]}
            )

    def txlb_settle(self, t: Target, where: str, timeout: float = 5.0) -> dict:
        """
        After load: txlb's active_connections must come back to 0.  Records
        the value right after the load and after waiting up to C{timeout}.
        """
        assert t.stats_url
        started = time.monotonic()
        first = None
        active = -1
        while True:
            try:
                stats = get_json(t.stats_url)
                active = stats["totals"]["active_connections"]  # type: ignore[index]
            except (OSError, ValueError, KeyError) as e:
                raise BenchError(f"{t.name} stats unavailable: {e}") from None
            if first is None:
                first = active
            if active == 0 or time.monotonic() - started > timeout:
                break
            time.sleep(0.1)
        record = {
            "where": where,
            "peer": t.name,
            "active_right_after": first,
            "active_after_wait": active,
            "waited_s": round(time.monotonic() - started, 2),
        }
        self.results["txlb_active_connections"].append(record)
        if active != 0:
            _log(f"NOTE {t.name} still has {active} active connections ({where})")
        return record

    # The measuring loop.

    def interleaved(
        self,
        cell_id: str,
        targets: dict[str, Target],
        run: Callable[[Target, float], dict[str, Any]],
        seconds: float,
        warmup: float,
        keep_warmup: bool = False,
        before: Callable[[Target], Any] | None = None,
        after: Callable[[Target, Any, dict[str, Any]], None] | None = None,
    ) -> None:
        """Warm up every target, then run 1 of each, run 2 of each..."""
        cell = self.results["cells"][cell_id]
        live = dict(targets)

        def one(name: str, t: Target, secs: float, label: str) -> dict[str, Any]:
            if t.proc is not None and not t.proc.alive():
                raise BenchError(
                    f"{name} is no longer running (status"
                    f" {t.proc.popen.returncode}):\n{t.proc.tail()}"
                )
            state = before(t) if before else None
            cpu0 = cpu_seconds(t.pid) if t.pid else None
            r = run(t, secs)
            if cpu0 is not None and t.pid:
                used = cpu_seconds(t.pid) - cpu0
                r["lb_cpu_s"] = round(used, 3)
                if r.get("requests"):
                    r["lb_cpu_us_per_req"] = round(used * 1e6 / r["requests"], 2)
            if after:
                after(t, state, r)
            if t.stats_url:
                r["txlb_active"] = self.txlb_settle(t, f"{cell_id} {label}")
            if t.proc is not None and not t.proc.alive():
                raise BenchError(f"{name} exited during the run:\n{t.proc.tail()}")
            return r

        for name, t in list(live.items()):
            try:
                r = one(name, t, warmup, "warm-up")
                if keep_warmup:
                    cell["peers"].setdefault(name, {"runs": []})["warmup"] = r
            except BenchError as e:
                self.fail(cell_id, name, e)
                del live[name]
        for i in range(self.s.runs):
            for name, t in list(live.items()):
                try:
                    r = one(name, t, seconds, f"run {i + 1}")
                except BenchError as e:
                    self.fail(cell_id, name, e)
                    del live[name]
                    continue
                cell["peers"].setdefault(name, {"runs": []})["runs"].append(r)
                _log(f"{cell_id} run {i + 1}/{self.s.runs} {name}: {_brief(r)}")
        for data in cell["peers"].values():
            data["median"] = report.summarize(data.get("runs", []))

    def wrk(
        self, path: str, connections: int, statuses: bool = False
    ) -> Callable[[Target, float], dict[str, Any]]:
        script = self.scripts[statuses]

        def run(t: Target, seconds: float) -> dict[str, Any]:
            return load.wrk(t.url + path, connections, seconds, script, LOAD_CPU)

        return run

    def ab(self, concurrency: int) -> Callable[[Target, float], dict[str, Any]]:
        def run(t: Target, seconds: float) -> dict[str, Any]:
            return load.ab(t.url + "/", concurrency, seconds, LOAD_CPU)

        return run

    # The scenarios.

    def run(self) -> None:
        sc = set(self.s.scenarios)
        small: list[int] = []
        many: list[int] = []
        if sc & {1, 2, 3, 6, 7, 8, 14, 15}:
            small = self.ctx.ports(3)
            many = self.ctx.ports(997) if 6 in sc else []
            _log(f"nginx backends on {len(small) + len(many)} ports (CPU 1)")
            self.backend_nginx = peers.start_nginx_backends(self.ctx, small + many)
        if sc & {1, 2, 3, 7}:
            self.http_group(small)
        if 8 in sc:
            self.tcp_group(small)
        if 6 in sc:
            self.selection_group(small, many)
        if 14 in sc:
            self.workers_group(small)
        if 4 in sc:
            self.hetero_group()
        if 5 in sc:
            self.failing_group()
        if 13 in sc:
            self.churn_group()
        if 15 in sc:
            self.picks_group()
            self.hash_group(small)

    def http_peers(self) -> list[str]:
        return [p for p in self.s.peers if p in peers.HTTP_PEERS]

    def start_all(
        self, names: list[str], backends: list[int], direct: bool
    ) -> dict[str, Target]:
        targets: dict[str, Target] = {}
        if direct:
            targets["direct"] = Target("direct", f"http://127.0.0.1:{backends[0]}")
        for name in names:
            _log(f"starting {name}")
            t = self.start(name, backends)
            if t is not None:
                targets[name] = t
            targets.update(self.compared(name, backends))
        return targets

    def compared(self, name: str, backends: list[int], **kw: Any) -> dict[str, Target]:
        """The same txlb peer from each --compare tree, named C{name@REV}."""
        found: dict[str, Target] = {}
        if not name.startswith("txlb"):
            return found
        for label, tree in self.ctx.txlb_compare:
            tag = kw.get("tag", "")
            compared = f"{name}{tag}@{label}"
            _log(f"starting {compared}")
            t = self.start(
                name, backends, **{**kw, "tag": f"{tag}@{label}"}, txlb_tree=tree
            )
            if t is not None:
                t.name = compared
                found[compared] = t
        return found

    def http_group(self, backends: list[int]) -> None:
        s = self.s
        sc = set(s.scenarios)
        targets = self.start_all(self.http_peers(), backends, direct=True)
        try:
            if 1 in sc:
                self.cell(
                    "1-c64",
                    1,
                    "small responses, keep-alive, c=64",
                    "rps",
                    f"wrk -t1 -c64 -d{s.seconds['1-c64']:g}s, 16-byte body",
                )
                self.interleaved(
                    "1-c64", targets, self.wrk("/", 64), s.seconds["1-c64"], s.warmup
                )
                self.cell(
                    "1-c256",
                    1,
                    "small responses, keep-alive, c=256",
                    "rps",
                    f"wrk -t1 -c256 -d{s.seconds['1-c256']:g}s, 16-byte body",
                )
                self.interleaved(
                    "1-c256", targets, self.wrk("/", 256), s.seconds["1-c256"], s.warmup
                )
                self.cell(
                    "1-c1",
                    1,
                    "latency at c=1 (one connection)",
                    "p50_ms",
                    f"wrk -t1 -c1 -d{s.seconds['1-c1']:g}s, 16-byte body",
                )
                self.interleaved(
                    "1-c1", targets, self.wrk("/", 1), s.seconds["1-c1"], s.warmup
                )
            if 2 in sc:
                self.cell(
                    "2-ab",
                    2,
                    "ab, HTTP/1.0 without keep-alive, c=50",
                    "rps",
                    f"ab -c 50 -t {s.seconds['2-ab']:g}, a new connection per request",
                )
                self.interleaved(
                    "2-ab", targets, self.ab(50), s.seconds["2-ab"], s.warmup
                )
            if 3 in sc:
                self.cell(
                    "3-1mib",
                    3,
                    "1 MiB responses, c=16",
                    "bytes_per_s",
                    f"wrk -t1 -c16 -d{s.seconds['3-1mib']:g}s, GET /1m",
                )
                self.interleaved(
                    "3-1mib",
                    targets,
                    self.wrk("/1m", 16),
                    s.seconds["3-1mib"],
                    s.warmup,
                )
            if 7 in sc:
                self.idle_scenario(targets)
        finally:
            self.stop(targets)

    def idle_scenario(self, targets: dict[str, Target]) -> None:
        n = self.s.idle_connections
        cell = self.cell(
            "7-idle",
            7,
            f"{n:,} idle keep-alive client connections",
            "rss_held_mib",
            f"{n:,} connections, one GET each, then held idle",
        )
        for name, t in targets.items():
            if t.proc is None:
                continue
            if name in _SKIP[7]:
                cell["peers"][name] = {"skipped": _SKIP[7][name]}
                continue
            try:
                cell["peers"][name] = self.idle_one(t, n)
            except BenchError as e:
                self.fail("7-idle", name, e)
            else:
                _log(f"7-idle {name}: {_brief_idle(cell['peers'][name])}")

    def idle_one(self, t: Target, n: int) -> dict[str, Any]:
        assert t.pid is not None
        self.wrk("/", 64)(t, 1)
        if t.stats_url:
            self.txlb_settle(t, "7-idle before")
        time.sleep(0.5)
        base = rss_bytes(t.pid)
        argv = [
            self.ctx.python,
            str(peers.BENCH / "idle_clients.py"),
            "--port",
            t.url.rsplit(":", 1)[1],
            "--count",
            str(n),
        ]
        client = self.ctx.procs.start(f"idle-{t.name}", argv, LOAD_CPU, pipes=True)
        try:
            opened = json.loads(_readline(client.popen, 180, "idle client"))
            time.sleep(1.0)
            held = rss_bytes(t.pid)
            active_held = None
            if t.stats_url:
                stats = get_json(t.stats_url)
                active_held = stats["totals"]["active_connections"]  # type: ignore[index]
            assert client.popen.stdin is not None
            client.popen.stdin.write(b"close\n")
            client.popen.stdin.flush()
            closed = json.loads(_readline(client.popen, 60, "idle client"))
            client.popen.wait(30)
        finally:
            self.ctx.procs.stop(client)
        time.sleep(1.0)
        after = rss_bytes(t.pid)
        result: dict[str, Any] = {
            "client": opened,
            "client_close": closed,
            "rss_base_mib": round(base / 2**20, 1),
            "rss_held_mib": round(held / 2**20, 1),
            "rss_after_close_mib": round(after / 2**20, 1),
            "kib_per_connection": round(
                (held - base) / 1024 / max(1, opened["opened"]), 2
            ),
        }
        if t.stats_url:
            result["txlb_active_while_held"] = active_held
            result["txlb_active"] = self.txlb_settle(t, "7-idle after close")
        return result

    def tcp_group(self, backends: list[int]) -> None:
        s = self.s
        names = [p if p in peers.TCP_PEERS else f"{p}-tcp" for p in s.peers]
        names = [p for p in dict.fromkeys(names) if p in peers.TCP_PEERS]
        targets = self.start_all(names, backends, direct=True)
        try:
            self.cell(
                "8-tcp-small",
                8,
                "TCP mode, small responses, c=64",
                "rps",
                f"wrk -t1 -c64 -d{s.seconds['8-tcp-small']:g}s through an L4 proxy",
            )
            self.interleaved(
                "8-tcp-small",
                targets,
                self.wrk("/", 64),
                s.seconds["8-tcp-small"],
                s.warmup,
            )
            self.cell(
                "8-tcp-1mib",
                8,
                "TCP mode, 1 MiB responses, c=16",
                "bytes_per_s",
                f"wrk -t1 -c16 -d{s.seconds['8-tcp-1mib']:g}s, GET /1m",
            )
            self.interleaved(
                "8-tcp-1mib",
                targets,
                self.wrk("/1m", 16),
                s.seconds["8-tcp-1mib"],
                s.warmup,
            )
        finally:
            self.stop(targets)

    def selection_group(self, small: list[int], many: list[int]) -> None:
        s = self.s
        if "txlb" not in s.peers:
            _log("scenario 6 measures txlb only: skipped (txlb not in --peers)")
            return
        # Probing 1000 backends every 2s would be measured too: both run with
        # a 60 s health interval, so the difference is the selection.
        # HAProxy and nginx run the same pair as references: what 1000
        # backends cost a balancer whatever its selection (each backend
        # connection is reused 300 times less often).
        targets: dict[str, Target] = {}
        for name in ("txlb", "haproxy", "nginx"):
            if name not in s.peers:
                continue
            for tag, backends in (("-3", small), ("-1000", small + many)):
                _log(f"starting {name}{tag}")
                kw: dict[str, Any] = {"tag": tag}
                if name == "txlb":
                    kw["txlb_health_interval"] = "60s"
                t = self.start(name, backends, **kw)
                if t is not None:
                    t.name = f"{name}{tag}"
                    targets[t.name] = t
                targets.update(self.compared(name, backends, **kw))
        try:
            self.cell(
                "6-selection",
                6,
                "selection cost: 1000 backends vs 3",
                "rps",
                f"wrk -t1 -c64 -d{s.seconds['6-selection']:g}s, 16-byte body",
            )
            self.interleaved(
                "6-selection",
                targets,
                self.wrk("/", 64),
                s.seconds["6-selection"],
                max(2.0, s.warmup),
            )
        finally:
            self.stop(targets)

    def churn_group(self) -> None:
        """Scenario 13 (bench/churn.py): txlb only, discovered vs static."""
        s = self.s
        if "txlb" not in s.peers:
            _log("scenario 13 measures txlb only: skipped (txlb not in --peers)")
            return
        (port,) = self.ctx.ports(1)
        backends = churn.start_backends(self.ctx, port)
        pool = None
        targets: dict[str, Target] = {}
        try:
            pool = churn.Pool(self.ctx)
            for tag, source in (("-static", None), ("-churn", pool)):
                _log(f"starting txlb{tag}")
                kw: dict[str, Any] = {
                    "tag": tag,
                    "txlb_health_interval": "60s",
                    "txlb_sections": churn.sections(source, port),
                }
                t = self.start("txlb", [], **kw)
                if t is not None:
                    t.name = f"txlb{tag}"
                    targets[t.name] = t
                targets.update(self.compared("txlb", [], **kw))
            pool.start_churn()
            self.cell(
                "13-churn",
                13,
                "100 backends from DNS, one swapped a second, vs 100 in lb.ini",
                "rps",
                f"wrk -t1 -c64 -d{s.seconds['13-churn']:g}s, 16-byte body",
            )
            self.interleaved(
                "13-churn", targets, self.wrk("/", 64), s.seconds["13-churn"], s.warmup
            )
            self.results["cells"]["13-churn"]["swaps"] = pool.swaps
        except BenchError as e:
            self.fail("13-churn", "txlb", e)
        finally:
            if pool is not None:
                pool.stop_churn()
            self.stop(targets)
            self.ctx.procs.stop(backends)
            if pool is not None:
                self.ctx.procs.stop(pool.proc)

    def workers_group(self, backends: list[int]) -> None:
        """Scenario 14: see bench/workers.py."""
        s = self.s
        if "txlb" not in s.peers:
            _log("scenario 14 measures txlb only: skipped (txlb not in --peers)")
            return
        targets: dict[str, Target] = {}
        fronts: dict[str, Target] = {}
        for n in s.workers:
            name = f"txlb-w{n}"
            _log(f"starting {name}")
            t = self.start("txlb", backends, tag=f"-w{n}", txlb_workers=n, pinned=False)
            if t is None:
                continue
            t.name = name
            targets[name] = t
            port = int(t.url.rsplit(":", 1)[1])
            front = self.start("nginx", [port], tag=f"-front-w{n}")
            if front is not None:
                fronts[name] = front
        nginx = self.backend_nginx.pid

        def loaders(t: Target) -> list[int]:
            front = fronts.get(t.name)
            return [nginx] + ([front.pid] if front is not None and front.pid else [])

        def via_front(t: Target, seconds: float) -> dict[str, Any]:
            front = fronts[t.name]
            return load.wrk(front.url + "/", 16, seconds, self.scripts[False], LOAD_CPU)

        before, after = workers_bench.spread()
        try:
            runs = {
                "14-keepalive": self.wrk("/", 64),
                "14-nginx": via_front,
                "14-short": self.ab(50),
            }
            for cell_id, run in runs.items():
                title, how = workers_bench.CELLS[cell_id]
                self.cell(
                    cell_id, 14, title, "rps", f"{how}, -d{s.seconds[cell_id]:g}s"
                )
                chosen = (
                    targets
                    if cell_id != "14-nginx"
                    else {k: v for k, v in targets.items() if k in fronts}
                )
                self.interleaved(
                    cell_id,
                    chosen,
                    workers_bench.with_load_cpu(run, loaders),
                    s.seconds[cell_id],
                    max(1.0, s.warmup),
                    before=before,
                    after=after,
                )
        finally:
            self.stop(fronts)
            self.stop(targets)

    def demo_stats(self, ports: list[int]) -> list[dict[str, Any]]:
        return [
            get_json(f"http://127.0.0.1:{p}/_demo/stats")  # type: ignore[misc]
            for p in ports
        ]

    def wait_demo_idle(self, ports: list[int], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                st["in_service"] == 0 and st["queued"] == 0
                for st in self.demo_stats(ports)
            ):
                return
            time.sleep(0.1)

    def shares(self, ports: list[int], names: list[str]):
        def before(t: Target) -> list[dict[str, Any]]:
            self.wait_demo_idle(ports)
            return self.demo_stats(ports)

        def after(t: Target, old: list[dict[str, Any]], r: dict[str, Any]) -> None:
            self.wait_demo_idle(ports)
            new = self.demo_stats(ports)
            counts = {
                n: b["requests"] - a["requests"]
                for n, a, b in zip(names, old, new, strict=True)
            }
            total = sum(counts.values()) or 1
            r["backend_requests"] = counts
            r["backend_share"] = {n: round(c / total, 4) for n, c in counts.items()}

        return before, after

    def hetero_group(self) -> None:
        s = self.s
        ports = self.ctx.ports(3)
        names = ["web1-5ms", "web2-20ms", "web3-80ms"]
        specs = [
            (n, p, ["--delay", d, "--capacity", "4"])
            for n, p, d in zip(names, ports, ["5ms", "20ms", "80ms"], strict=True)
        ]
        _log("demo backends 5/20/80 ms, capacity 4 (CPU 1)")
        backends = peers.start_demo_backends(self.ctx, specs)
        targets = self.start_all(self.http_peers(), ports, direct=False)
        if "txlb" in targets:
            # txlb's latency-aware policy, beside its default least_conn.
            t = self.start("txlb-least-time", ports)
            if t is not None:
                targets[t.name] = t
        try:
            self.cell(
                "4-hetero",
                4,
                "heterogeneous backends: 5, 20, 80 ms, capacity 4",
                "p99_ms",
                f"wrk -t1 -c64 -d{s.seconds['4-hetero']:g}s",
            )
            before, after = self.shares(ports, names)
            self.interleaved(
                "4-hetero",
                targets,
                self.wrk("/", 64, statuses=True),
                s.seconds["4-hetero"],
                s.slow_warmup,
                before=before,
                after=after,
            )
        finally:
            self.stop(targets)
            for p in backends:
                self.ctx.procs.stop(p)

    def failing_group(self) -> None:
        s = self.s
        ports = self.ctx.ports(3)
        names = ["ok1", "ok2", "bad"]
        specs = [
            ("ok1", ports[0], ["--delay", "5ms"]),
            ("ok2", ports[1], ["--delay", "5ms"]),
            ("bad", ports[2], ["--error-rate", "1"]),
        ]
        _log("demo backends: two answering in 5 ms, one answering 500 at once")
        backends = peers.start_demo_backends(self.ctx, specs)
        targets = self.start_all(self.http_peers(), ports, direct=False)
        try:
            self.cell(
                "5-failing",
                5,
                "one backend answers 500 at once",
                "error_share",
                f"wrk -t1 -c64: a {s.slow_warmup:g}s first run (detection),"
                f" then {s.runs} runs of {s.seconds['5-failing']:g}s (once ejected)",
            )
            before, after = self.shares(ports, names)
            # One peer after another: each peer's measured runs follow its
            # own detection run, within its ejection time (30 s).
            for name, t in targets.items():
                self.interleaved(
                    "5-failing",
                    {name: t},
                    self.wrk("/", 64, statuses=True),
                    s.seconds["5-failing"],
                    s.slow_warmup,
                    keep_warmup=True,
                    before=before,
                    after=after,
                )
        finally:
            self.stop(targets)
            for p in backends:
                self.ctx.procs.stop(p)

    def picks_group(self) -> None:
        """Scenario 15: bench/picks.py on the balancer's CPU, runs interleaved."""
        s = self.s
        if not any(p.startswith("txlb") for p in s.peers):
            _log("15-picks measures txlb only: skipped (txlb not in --peers)")
            return
        seconds = s.seconds["15-picks"]
        cell = self.cell(
            "15-picks",
            15,
            "CPU per pick: each algorithm at 3 and 1000 backends",
            "us_per_pick",
            f"bench/picks.py --seconds {seconds:g}: acquire and release, 64 in"
            " flight, 10,000 keys, pinned to the balancer's CPU",
        )
        trees = [("", self.ctx.txlb_pythonpath), *self.ctx.txlb_compare]
        for i in range(s.runs):
            for label, tree in trees:
                argv = ["taskset", "-c", str(BALANCER_CPU), self.ctx.python]
                argv += [str(peers.BENCH / "picks.py"), "--seconds", f"{seconds:g}"]
                env = {**os.environ, "PYTHONPATH": tree} if tree else None
                try:
                    done = subprocess.run(
                        argv, capture_output=True, env=env, timeout=600, check=True
                    )
                    found = json.loads(done.stdout.decode().splitlines()[-1])
                except (subprocess.SubprocessError, ValueError, IndexError) as e:
                    self.fail("15-picks", label or "txlb", BenchError(str(e)))
                    continue
                for name, r in found.items():
                    peer = f"{name}@{label}" if label else name
                    run = {"us_per_pick": r["us_per_pick"], "requests": r["picks"]}
                    cell["peers"].setdefault(peer, {"runs": []})["runs"].append(run)
                brief = ", ".join(
                    f"{k} {v['us_per_pick']:.2f}" for k, v in found.items()
                )
                _log(f"15-picks run {i + 1}/{s.runs} {label or 'txlb'}: {brief} us")
        for data in cell["peers"].values():
            data["median"] = report.summarize(data.get("runs", []))

    def hash_group(self, backends: list[int]) -> None:
        """Scenario 15: consistent hashing of X-User through each balancer."""
        s = self.s
        names = ["txlb-hash", "txlb"] if "txlb" in s.peers else []
        names += [f"{p}-hash" for p in ("haproxy", "nginx") if p in s.peers]
        if not names:
            _log("15-hash: no peer of txlb, haproxy or nginx chosen: skipped")
            return
        script = load.write_users_script(self.ctx.workdir)
        targets: dict[str, Target] = {}
        for name in names:
            _log(f"starting {name}")
            t = self.start(name, backends)
            if t is not None:
                t.name = name
                targets[name] = t
            targets.update(self.compared(name, backends))
        try:
            self.cell(
                "15-hash",
                15,
                "hash_key = header:X-User, 10,000 users, c=64",
                "rps",
                f"wrk -t1 -c64 -d{s.seconds['15-hash']:g}s, each request from one of"
                " 10,000 users (X-User, seeded); txlb least_conn beside as the"
                " baseline",
            )

            def run(t: Target, seconds: float) -> dict[str, Any]:
                return load.wrk(t.url + "/", 64, seconds, script, LOAD_CPU)

            self.interleaved("15-hash", targets, run, s.seconds["15-hash"], s.warmup)
        finally:
            self.stop(targets)


def _readline(popen: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    assert popen.stdout is not None
    ready, _, _ = select.select([popen.stdout], [], [], timeout)
    if not ready:
        raise BenchError(f"{what} printed nothing in {timeout:g}s")
    line = popen.stdout.readline().decode()
    if not line:
        raise BenchError(f"{what} exited with status {popen.wait(5)}")
    return line


def _brief(r: dict[str, Any]) -> str:
    parts = [f"{r['rps']:,.0f} req/s"]
    if r.get("bytes_per_s", 0) > 1e8:
        parts.append(f"{r['bytes_per_s'] / 1e9:.2f} GB/s")
    parts.append(f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms")
    if "lb_cpu_us_per_req" in r:
        parts.append(f"{r['lb_cpu_us_per_req']:.0f} us CPU/req")
    errors = report.error_count(r)
    if errors:
        parts.append(f"{errors:,} errors")
    if "backend_share" in r:
        parts.append(
            "shares " + "/".join(f"{v:.0%}" for v in r["backend_share"].values())
        )
    return ", ".join(parts)


def _brief_idle(r: dict[str, Any]) -> str:
    return (
        f"{r['client']['opened']:,} open, RSS {r['rss_base_mib']} -> "
        f"{r['rss_held_mib']} MiB ({r['kib_per_connection']} KiB/conn),"
        f" {r['rss_after_close_mib']} MiB after close"
    )


def _versions(python: str) -> dict[str, str]:
    def out(*argv: str) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, timeout=20, check=False)
        except OSError:
            return "missing"
        text = (done.stdout + done.stderr).decode(errors="replace").strip()
        return text.splitlines()[0] if text else ""

    return {
        "nginx": out("nginx", "-v"),
        "haproxy": out("haproxy", "-v"),
        "caddy": out("caddy", "version"),
        "wrk": out("wrk", "-v"),
        "ab": out("ab", "-V"),
        "python": out(python, "-VV"),
        "twisted": out(python, "-c", "import twisted; print(twisted.__version__)"),
        "aiohttp": out(python, "-c", "import aiohttp; print(aiohttp.__version__)"),
    }


def _txlb_tree(which: str, workdir: Path) -> str | None:
    """
    The PYTHONPATH that makes twistd load txlb from the chosen tree: the
    working tree, the copy in the venv (None), or a commit (HEAD or any
    revision), checked out into the work directory.
    """
    if which == "source":
        return str(ROOT)
    if which == "installed":
        return None
    rev = "HEAD" if which == "head" else which
    tree = workdir / f"txlb-{rev}"
    if tree.exists():
        return str(tree)
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", rev, "txlb", "twisted/plugins", "web"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    vendor = ROOT / "web" / "vendor"
    if vendor.is_dir() and not (tree / "web" / "vendor").exists():
        shutil.copytree(vendor, tree / "web" / "vendor")
    return str(tree)


def _git() -> dict[str, Any]:
    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", *argv], capture_output=True, cwd=ROOT, check=False, timeout=20
        )
        return done.stdout.decode().strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "txlb_dirty": bool(git("status", "--porcelain", "--", "txlb")),
        "txlb_diff_stat": git("diff", "--shortstat", "HEAD", "--", "txlb"),
    }


def _preflight(s: Settings) -> None:
    needed = {"taskset", "wrk"}
    if 2 in s.scenarios:
        needed.add("ab")
    if set(s.scenarios) & {1, 2, 3, 6, 7, 8, 15}:
        needed.add("nginx")
    for name in s.peers:
        needed.add(
            {"haproxy": "haproxy", "caddy": "caddy", "nginx": "nginx"}.get(
                name, "taskset"
            )
        )
    missing = sorted(n for n in needed if shutil.which(n) is None)
    if missing:
        raise BenchError(
            f"missing programs: {', '.join(missing)}; install them with"
            " scripts/install-system-deps.sh (or make bench)"
        )
    cpus = os.sched_getaffinity(0)
    if not {BALANCER_CPU, LOAD_CPU} <= cpus:
        raise BenchError(
            f"need CPUs {BALANCER_CPU} and {LOAD_CPU}; this process may use {cpus}"
        )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if 7 in s.scenarios and hard < s.idle_connections + 1000:
        raise BenchError(
            f"ulimit -n is {hard}: too low for {s.idle_connections} idle connections"
        )


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="txlb against its peers (issue 7).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n"
        + "\n".join(f"  {k}  {v}" for k, v in SCENARIOS.items())
        + "\n\npeers: "
        + ", ".join(peers.HTTP_PEERS)
        + " (scenario 8 uses haproxy-tcp and txlb-tcp for haproxy and txlb;"
        " 'direct', no balancer, is always measured as the baseline)",
    )
    parser.add_argument("--scenarios", default="all", help="e.g. 1,8 (default all)")
    parser.add_argument("--peers", default="all", help="e.g. txlb,aiohttp,caddy")
    parser.add_argument("--runs", type=int, default=3, help="runs per cell (3)")
    parser.add_argument(
        "--quick", action="store_true", help="1 s runs and warm-ups (to iterate)"
    )
    parser.add_argument("--duration", type=float, help="seconds of every run")
    parser.add_argument("--idle-connections", type=int, default=10000)
    parser.add_argument(
        "--output",
        help="results path without extension (default bench/results/latest"
        " for a full run, bench/results/partial otherwise)",
    )
    parser.add_argument(
        "--txlb",
        default="source",
        help="run txlb from the working tree ('source', the default, uncommitted"
        " changes included), from the last commit ('head'), as installed in"
        " .venv ('installed'), or from any git revision",
    )
    parser.add_argument(
        "--compare",
        default="",
        help="git revisions (comma list) whose txlb runs beside the chosen one in"
        " every txlb cell, as peer txlb@REV: an A/B in one sitting (the same"
        " revision as --txlb measures the A/A noise)",
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="worker counts scenario 14 compares (default 1,2; e.g. 1,2,4,8)",
    )
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)

    try:
        scenarios = (
            sorted(SCENARIOS)
            if args.scenarios == "all"
            else sorted({int(x) for x in args.scenarios.split(",") if x.strip()})
        )
    except ValueError:
        parser.error(f"--scenarios: not a list of numbers: {args.scenarios!r}")
    if bad := [x for x in scenarios if x not in SCENARIOS]:
        known_scenarios = ", ".join(map(str, SCENARIOS))
        parser.error(f"--scenarios: no scenario {bad[0]}; there are {known_scenarios}")
    known = peers.HTTP_PEERS + peers.TCP_PEERS
    chosen = (
        list(peers.HTTP_PEERS)
        if args.peers == "all"
        else [p.strip() for p in args.peers.split(",") if p.strip()]
    )
    if bad_peers := [p for p in chosen if p not in known]:
        parser.error(f"--peers: unknown {bad_peers[0]!r}; known: {', '.join(known)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        workers = sorted({int(x) for x in args.workers.split(",") if x.strip()})
    except ValueError:
        parser.error(f"--workers: not a list of numbers: {args.workers!r}")
    if not workers or min(workers) < 1:
        parser.error("--workers: counts of 1 or more")
    quick = args.quick
    d = args.duration
    s = Settings(
        scenarios=scenarios,
        peers=chosen,
        runs=args.runs,
        warmup=1.0,
        seconds={
            cell: d or (1.0 if quick else seconds) for cell, seconds in _SECONDS.items()
        },
        slow_warmup=1.0 if quick else 2.0,
        idle_connections=args.idle_connections,
        workers=workers,
        quick=quick,
        full=(
            args.scenarios == "all"
            and args.peers == "all"
            and not quick
            and d is None
            and args.runs >= 3
        ),
    )
    return s, args


def main(argv: list[str] | None = None) -> int:
    s, args = parse_args(argv)
    output = Path(
        args.output or ROOT / "bench" / "results" / ("latest" if s.full else "partial")
    )
    python = peers.python_for_bench()
    workdir = Path(tempfile.mkdtemp(prefix="txlb-bench-"))
    procs = Processes(workdir)
    ctx = Context(
        procs=procs,
        workdir=workdir,
        python=python,
        txlb_pythonpath=_txlb_tree(args.txlb, workdir),
        txlb_compare=[
            (rev, _txlb_tree(rev, workdir) or "")
            for rev in args.compare.split(",")
            if rev.strip()
        ],
    )
    results: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(["python bench/run.py", *(argv or sys.argv[1:])]),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "loadavg_start": os.getloadavg(),
            "txlb_from": args.txlb,
            "git": _git(),
            "versions": _versions(python),
            "pinning": {"balancer_cpu": BALANCER_CPU, "load_cpu": LOAD_CPU},
        },
        "settings": asdict(s),
        "scenarios": {str(k): SCENARIOS[k] for k in s.scenarios},
        "peers": {},
        "cells": {},
        "failures": [],
        "txlb_active_connections": [],
        "txlb_log_issues": [],
    }
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    started = time.monotonic()
    status = 0
    try:
        _preflight(s)
        _log(f"scenarios {s.scenarios}, peers {s.peers}, {s.runs} runs; in {workdir}")
        Bench(ctx, s, results).run()
    except (BenchError, Interrupted, KeyboardInterrupt) as e:
        results["aborted"] = f"{type(e).__name__}: {e}"
        print(f"bench: aborted: {e}", file=sys.stderr)
        status = 1
    finally:
        procs.stop_all()
        results["meta"]["seconds"] = round(time.monotonic() - started, 1)
        results["meta"]["loadavg_end"] = os.getloadavg()
    if results["cells"]:
        report.finish(results)
        written = report.write(results, output, with_chart=not args.no_chart)
        print(report.markdown(results))
        print("wrote " + ", ".join(str(p) for p in written))
    if status or results["failures"] or args.keep_workdir:
        print(f"logs kept in {workdir}")
    else:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    return status


if __name__ == "__main__":
    sys.exit(main())
