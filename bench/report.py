"""
Medians, ratios against the same run's peers, issue 7's targets, and the
outputs: JSON (every raw number), a markdown report and a PNG chart.

  python bench/report.py bench/results/latest.json   # redraw .md and .png
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

__all__ = ["error_count", "finish", "markdown", "summarize", "write"]

ORDER = [
    "direct",
    "nginx",
    "haproxy",
    "haproxy-tcp",
    "caddy",
    "aiohttp",
    "twisted-stock",
    "txlb",
    "txlb-tcp",
    "txlb-3",
    "txlb-1000",
    "haproxy-3",
    "haproxy-1000",
    "nginx-3",
    "nginx-1000",
]

_MEDIAN_KEYS = (
    "rps",
    "bytes_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "lb_cpu_us_per_req",
    "error_share",
    "us_per_pick",
)


def error_count(r: dict[str, Any]) -> int:
    """Client-visible errors of one run: non-2xx/3xx answers and socket errors."""
    if "errors" in r:  # wrk
        return int(r["errors"]["status"] + r["socket_errors"])
    return int(r.get("failed", 0) + r.get("non_2xx", 0))  # ab


def _attempts(r: dict[str, Any]) -> int:
    return int(r["requests"] + r.get("socket_errors", 0))


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the runs' rates and latencies; totals of their counts."""
    if not runs:
        return {}
    for r in runs:
        r["error_share"] = error_count(r) / max(1, _attempts(r))
    out: dict[str, Any] = {"runs": len(runs)}
    for key in _MEDIAN_KEYS:
        values = [r[key] for r in runs if key in r]
        if values:
            out[key] = round(statistics.median(values), 4)
    out["requests_total"] = sum(r["requests"] for r in runs)
    out["errors_total"] = sum(error_count(r) for r in runs)
    if all("backend_requests" in r for r in runs):
        totals: dict[str, int] = {}
        for r in runs:
            for name, n in r["backend_requests"].items():
                totals[name] = totals.get(name, 0) + n
        whole = sum(totals.values()) or 1
        out["backend_requests"] = totals
        out["backend_share"] = {n: round(c / whole, 4) for n, c in totals.items()}
    return out


def _txlb_name(cell_id: str) -> str:
    if cell_id.startswith("8-"):
        return "txlb-tcp"
    if cell_id == "15-hash":
        return "txlb-hash"
    if cell_id.startswith("6-"):
        return "txlb-1000"
    if cell_id.startswith("13-"):
        return "txlb-churn"
    return "txlb"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def _med(cell: dict[str, Any], peer: str, key: str) -> float | None:
    value = cell["peers"].get(peer, {}).get("median", {}).get(key)
    return None if value is None else float(value)


def finish(results: dict[str, Any]) -> None:
    """Add each cell's ratios (txlb / peer) and the targets to C{results}."""
    for cell_id, cell in results["cells"].items():
        metric = cell["metric"]
        mine = _txlb_name(cell_id)
        if metric in ("rps", "bytes_per_s", "p50_ms", "p99_ms"):
            cell["ratios"] = {
                p: _ratio(_med(cell, mine, metric), _med(cell, p, metric))
                for p in cell["peers"]
                if p != mine
            }
            cell["ratios_mean"] = f"{mine} {metric} / peer {metric}"
        cpu = {p: _med(cell, p, "lb_cpu_us_per_req") for p in cell["peers"]}
        if cpu.get(mine) and metric in ("rps", "bytes_per_s"):
            cell["cpu_ratios"] = {
                p: _ratio(v, cpu[mine])
                for p, v in cpu.items()
                if p != mine and v is not None
            }
            cell["cpu_ratios_mean"] = (
                f"peer CPU time per request / {mine}'s: requests per CPU-second,"
                " txlb over peer (less moved by other load on the machine)"
            )
        if cell_id == "6-selection":
            # Each balancer's 1000-backend throughput over its 3-backend one.
            cell["scale"] = {
                base: _ratio(
                    _med(cell, f"{base}-1000", metric), _med(cell, f"{base}-3", metric)
                )
                for base in ("txlb", "haproxy", "nginx")
                if f"{base}-3" in cell["peers"] and f"{base}-1000" in cell["peers"]
            }
            cell["scale_cpu"] = {
                base: _ratio(cpu.get(f"{base}-3"), cpu.get(f"{base}-1000"))
                for base in cell["scale"]
            }
        if cell_id == "1-c1":
            direct = _med(cell, "direct", "p50_ms")
            cell["added_p50_ms"] = {
                p: (
                    None
                    if direct is None or _med(cell, p, "p50_ms") is None
                    else round(_med(cell, p, "p50_ms") - direct, 4)
                )  # type: ignore[operator]
                for p in cell["peers"]
                if p != "direct"
            }
    results["targets"] = _targets(results)


def _target(
    text: str,
    value: float | None,
    threshold: float,
    higher: bool,
    unit: str,
    by_cpu: float | None = None,
) -> dict[str, Any]:
    if value is None:
        return {"target": text, "measured": None, "met": None, "shown": "not measured"}
    met = value >= threshold if higher else value < threshold
    out = {
        "target": text,
        "measured": value,
        "threshold": threshold,
        "met": met,
        "shown": f"{value:.3g}{unit}",
    }
    if by_cpu is not None:
        # The same ratio from CPU time per request: what one core would
        # give each peer, less moved by other load on the machine.
        out["by_cpu"] = by_cpu
        out["met_by_cpu"] = by_cpu >= threshold
    return out


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    cells = results["cells"]

    def ratio(cell_id: str, peer: str) -> float | None:
        return cells.get(cell_id, {}).get("ratios", {}).get(peer)

    def cpu(cell_id: str, peer: str) -> float | None:
        return cells.get(cell_id, {}).get("cpu_ratios", {}).get(peer)

    out = [
        _target(
            "HTTP small, c=64: txlb ≥ 2.0x aiohttp",
            ratio("1-c64", "aiohttp"),
            2.0,
            True,
            "x",
            cpu("1-c64", "aiohttp"),
        ),
        _target(
            "HTTP small, c=64: txlb ≥ 1.0x Caddy",
            ratio("1-c64", "caddy"),
            1.0,
            True,
            "x",
            cpu("1-c64", "caddy"),
        ),
        _target(
            "p50 added latency at c=1 < 1 ms",
            cells.get("1-c1", {}).get("added_p50_ms", {}).get("txlb"),
            1.0,
            False,
            " ms",
        ),
        _target(
            "TCP mode, small: ≥ 0.5x HAProxy mode tcp",
            ratio("8-tcp-small", "haproxy-tcp"),
            0.5,
            True,
            "x",
            cpu("8-tcp-small", "haproxy-tcp"),
        ),
        _target(
            "TCP mode, 1 MiB: ≥ 0.6x HAProxy mode tcp",
            ratio("8-tcp-1mib", "haproxy-tcp"),
            0.6,
            True,
            "x",
            cpu("8-tcp-1mib", "haproxy-tcp"),
        ),
    ]
    hetero = cells.get("4-hetero")
    mine = _med(hetero, "txlb-least-time", "p99_ms") if hetero else None
    theirs = _med(hetero, "haproxy", "p99_ms") if hetero else None
    t = _target(
        "heterogeneous backends (txlb least_time): p99 ≤ HAProxy leastconn's p99",
        _ratio(mine, theirs),
        1.0,
        False,
        "x HAProxy's p99",
    )
    if t["met"] is not None:
        t["met"] = t["measured"] <= 1.0
        t["shown"] = (
            f"{t['measured']:.3f}x HAProxy's p99 ({mine:.0f} ms vs {theirs:.0f} ms)"
        )
    out.append(t)
    failing = cells.get("5-failing")
    share = _med(failing, "txlb", "error_share") if failing else None
    t = _target(
        "failing backend: < 1% client-visible errors once ejected",
        None if share is None else share * 100,
        1.0,
        False,
        "%",
    )
    out.append(t)
    out.append(
        _target(
            "1000 backends: ≥ 0.9x the 3-backend throughput",
            ratio("6-selection", "txlb-3"),
            0.9,
            True,
            "x",
            cpu("6-selection", "txlb-3"),
        )
    )
    churned = cells.get("13-churn")
    out.append(
        _target(
            "100 discovered backends, one swapped a second: CPU per request"
            " within 5% of 100 static ones",
            _ratio(
                _med(churned, "txlb-churn", "lb_cpu_us_per_req") if churned else None,
                _med(churned, "txlb-static", "lb_cpu_us_per_req") if churned else None,
            ),
            1.05,
            False,
            "x the static pool's CPU per request",
        )
    )
    idle = cells.get("7-idle", {}).get("peers", {}).get("txlb", {})
    out.append(
        _target(
            f"{results['settings']['idle_connections']:,} idle connections:"
            " < 300 MiB resident",
            idle.get("rss_held_mib"),
            300,
            False,
            " MiB",
        )
    )
    return out


# Markdown.


def _peers(cell: dict[str, Any]) -> list[str]:
    names = list(cell["peers"])
    return sorted(names, key=lambda p: (ORDER.index(p) if p in ORDER else 99, p))


def _f(value: float | None, fmt: str = "{:,.0f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt.format(value)


def _label(results: dict[str, Any], peer: str) -> str:
    return "**txlb**" if peer == "txlb" else peer


def _errors(m: dict[str, Any]) -> str:
    n = m.get("errors_total", 0)
    if not n:
        return "0"
    return f"{n:,} ({m.get('error_share', 0):.1%})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _cell_md(results: dict[str, Any], cell_id: str, cell: dict[str, Any]) -> list[str]:
    out = [f"### {cell_id}: {cell['title']}", "", f"Load: {cell['load']}.", ""]
    ratios = cell.get("ratios", {})
    mine = _txlb_name(cell_id)
    rows = []
    if cell_id.startswith("14-"):
        import workers

        return [*out, *workers.markdown(cell), ""]
    if cell_id == "7-idle":
        header = [
            "peer",
            "connections open",
            "RSS before",
            "RSS held",
            "KiB / conn",
            "RSS after close",
            "txlb active after",
        ]
        for p in _peers(cell):
            d = cell["peers"][p]
            if "skipped" in d:
                rows.append([p, f"skipped: {d['skipped']}", "", "", "", "", ""])
                continue
            active = d.get("txlb_active", {}).get("active_after_wait", "")
            rows.append(
                [
                    _label(results, p),
                    f"{d['client']['opened']:,}",
                    f"{d['rss_base_mib']} MiB",
                    f"{d['rss_held_mib']} MiB",
                    f"{d['kib_per_connection']}",
                    f"{d['rss_after_close_mib']} MiB",
                    str(active),
                ]
            )
        return [*out, *_table(header, rows), ""]
    if cell_id == "15-picks":
        return [*out, *_picks_table(cell), ""]
    if cell_id == "1-c1":
        header = ["peer", "p50", "p90", "p99", "added p50 vs direct", "req/s"]
        for p in _peers(cell):
            m = cell["peers"][p].get("median", {})
            rows.append(
                [
                    _label(results, p),
                    _f(m.get("p50_ms"), "{:.3f} ms"),
                    _f(m.get("p90_ms"), "{:.3f} ms"),
                    _f(m.get("p99_ms"), "{:.3f} ms"),
                    _f(cell.get("added_p50_ms", {}).get(p), "{:+.3f} ms"),
                    _f(m.get("rps")),
                ]
            )
        return [*out, *_table(header, rows), ""]
    if cell_id in ("4-hetero", "5-failing"):
        names: list[str] = []
        for p in cell["peers"]:
            names = list(cell["peers"][p].get("median", {}).get("backend_share", {}))
            if names:
                break
        header = ["peer", "req/s", "p50", "p99", "errors"]
        if cell_id == "5-failing":
            header = [
                "peer",
                "errors in the first run (detection)",
                "errors once ejected",
                "req/s",
                "p50",
                "p99",
            ]
        header += [f"share {n}" for n in names]
        if cell_id == "4-hetero":
            header.append("txlb p99 ÷ peer p99")
        for p in _peers(cell):
            d = cell["peers"][p]
            m = d.get("median", {})
            shares = [_f(m.get("backend_share", {}).get(n), "{:.1%}") for n in names]
            if cell_id == "5-failing":
                w = d.get("warmup", {})
                first = f"{error_count(w):,} of {w['requests']:,}" if w else ""
                row = [
                    _label(results, p),
                    first,
                    _errors(m),
                    _f(m.get("rps")),
                    _f(m.get("p50_ms"), "{:.1f} ms"),
                    _f(m.get("p99_ms"), "{:.1f} ms"),
                    *shares,
                ]
            else:
                row = [
                    _label(results, p),
                    _f(m.get("rps")),
                    _f(m.get("p50_ms"), "{:.1f} ms"),
                    _f(m.get("p99_ms"), "{:.1f} ms"),
                    _errors(m),
                    *shares,
                    _f(ratios.get(p), "{:.2f}"),
                ]
            rows.append(row)
        return [*out, *_table(header, rows), ""]
    bulk = cell["metric"] == "bytes_per_s"
    header = (
        ["peer"]
        + (["GB/s"] if bulk else [])
        + [
            "req/s",
            "p50",
            "p99",
            "balancer CPU µs/req",
            "errors",
            f"{mine} ÷ peer",
            f"{mine} ÷ peer by CPU",
        ]
    )
    for p in _peers(cell):
        m = cell["peers"][p].get("median", {})
        row = [_label(results, p)]
        if bulk:
            row.append(_f(m.get("bytes_per_s", 0) / 1e9, "{:.2f}"))
        row += [
            _f(m.get("rps")),
            _f(m.get("p50_ms"), "{:.2f} ms"),
            _f(m.get("p99_ms"), "{:.2f} ms"),
            _f(m.get("lb_cpu_us_per_req"), "{:.1f}"),
            _errors(m),
            _f(ratios.get(p), "{:.2f}"),
            _f(cell.get("cpu_ratios", {}).get(p), "{:.2f}"),
        ]
        rows.append(row)
    out = [*out, *_table(header, rows), ""]
    if cell.get("scale"):
        scales = [
            f"{base} {_f(v, '{:.2f}')}x"
            f" (by CPU {_f(cell['scale_cpu'].get(base), '{:.2f}')}x)"
            for base, v in cell["scale"].items()
        ]
        out += [
            "1000 backends ÷ 3, each balancer in the same run: "
            + ", ".join(scales)
            + ".",
            "",
        ]
    return out


def _picks_table(cell: dict[str, Any]) -> list[str]:
    """Scenario 15: µs of CPU per pick, a row per algorithm (and compared tree)."""
    found: dict[str, dict[str, float | None]] = {}
    for peer, data in cell["peers"].items():
        name, _, label = peer.partition("@")
        algorithm, _, size = name.rpartition("-")
        row = algorithm + (f" @{label}" if label else "")
        found.setdefault(row, {})[size] = data.get("median", {}).get("us_per_pick")
    rows = []
    for row, sizes in found.items():
        small, large = sizes.get("3"), sizes.get("1000")
        rows.append(
            [
                row,
                _f(small, "{:.2f}"),
                _f(large, "{:.2f}"),
                _f(_ratio(large, small), "{:.2f}x"),
            ]
        )
    header = ["algorithm", "µs / pick, 3 backends", "µs / pick, 1000", "1000 ÷ 3"]
    return _table(header, rows)


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    s = results["settings"]
    git = meta.get("git", {})
    lines = [
        "# txlb benchmark: txlb and its peers in one run",
        "",
        f"Run {meta['started']} on {meta['cpus']} CPUs ({meta['kernel']}),"
        f" {meta.get('seconds', '?')} s; load average"
        f" {meta['loadavg_start'][0]:.2f} at the start,"
        f" {meta.get('loadavg_end', [float('nan')])[0]:.2f} at the end"
        " (other work on the machine makes absolute numbers noisy; the ratios"
        " compare runs interleaved in time).",
        f"Command: `{meta['command']}`. txlb "
        + {
            "source": "from the working tree",
            "head": "as committed",
            "installed": "as installed in .venv, from the working tree",
        }[meta["txlb_from"]]
        + f" at {git.get('commit', '?')[:10]}"
        + (
            f" with uncommitted changes to txlb/ ({git.get('txlb_diff_stat')})"
            if git.get("txlb_dirty") and meta["txlb_from"] != "head"
            else ""
        )
        + ".",
        f"Each balancer pinned to CPU {meta['pinning']['balancer_cpu']} (one"
        " process / worker / thread, Caddy with GOMAXPROCS=1); nginx backends"
        " (one worker, 16-byte body, 1 MiB on /1m), demo backends, wrk, ab and"
        f" the idle-connection client on CPU {meta['pinning']['load_cpu']}."
        f" Median of {s['runs']} runs per cell after a warm-up; runs of the"
        " peers interleaved.",
        "",
    ]
    if results.get("aborted"):
        lines += [f"**The run was aborted: {results['aborted']}**", ""]
    if results.get("targets"):
        lines += ["## Targets (issue 7)", ""]
        rows = []
        verdicts = {True: "met", False: "**missed**", None: "not measured"}
        for t in results["targets"]:
            by_cpu = ""
            if "by_cpu" in t:
                by_cpu = f"{t['by_cpu']:.3g}x ({verdicts[t['met_by_cpu']]})"
            shown = t["shown"] if t["met"] is not None else ""
            rows.append([t["target"], shown, verdicts[t["met"]], by_cpu])
        header = ["target", "measured", "", "the same ratio by CPU time per request"]
        lines += [*_table(header, rows), ""]
        lines += [
            "The verdict is the throughput ratio from the same run. The last"
            " column compares the balancers' own CPU time per request instead"
            " (requests per CPU-second): other work on a shared machine moves"
            " it much less than throughput.",
            "",
        ]
    lines += ["## Results", ""]
    for cell_id, cell in results["cells"].items():
        lines += _cell_md(results, cell_id, cell)
    checks = results.get("txlb_active_connections", [])
    if checks:
        stuck = [c for c in checks if c["active_after_wait"] != 0]
        slow = max(c["waited_s"] for c in checks)
        lines += ["## txlb's active_connections after each run", ""]
        if stuck:
            lines += [f"{len(stuck)} of {len(checks)} checks did NOT return to 0:", ""]
            lines += [
                f"- {c['where']} ({c['peer']}): {c['active_right_after']} right"
                f" after, {c['active_after_wait']} after {c['waited_s']} s"
                for c in stuck
            ]
        else:
            nonzero = sum(1 for c in checks if c["active_right_after"])
            lines.append(
                f"All {len(checks)} checks returned to 0 (within {slow} s;"
                f" {nonzero} were above 0 at the first look right after the load)."
            )
        lines.append("")
    if results.get("txlb_log_issues"):
        lines += ["## Errors in txlb's log", ""]
        for issue in results["txlb_log_issues"]:
            lines.append(f"- {issue['peer']}: {issue['count']} lines, first:")
            lines += [f"  `{x[:200]}`" for x in issue["first"][:3]]
        lines.append("")
    if results.get("failures"):
        lines += ["## Failures", ""]
        for f in results["failures"]:
            text = [x for x in f["error"].splitlines() if x.strip()]
            last = f" ... `{text[-1][:200]}`" if len(text) > 1 else ""
            lines.append(f"- {f['where']} {f['peer']}: {text[0]}{last}")
        lines.append("")
    lines += [
        "## Peer configurations",
        "",
        "Passive checks (scenario 5): txlb `[outlier]` defaults (5 consecutive"
        " failures, ejected 30 s); nginx `max_fails=5 fail_timeout=30s` with"
        " `proxy_next_upstream error timeout http_500` (nginx counts a 500 as a"
        " failure only so, and then also retries it on another backend); HAProxy"
        " `check inter 2s fall 3 rise 2 observe layer7 error-limit 5 on-error"
        " mark-down`; Caddy `max_fails 5 fail_duration 30s unhealthy_status 5xx`"
        " with active `health_uri /health`; aiohttp and stock Twisted have none."
        " Every configuration is in latest.json under `peers`.",
        "",
    ]
    return "\n".join(lines)


# The chart.


def chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib is missing: no chart", file=sys.stderr)
        return False
    cells = results["cells"]
    panels = [
        (cid, title, key, scale, unit)
        for cid, title, key, scale, unit in (
            ("1-c64", "small, keep-alive, c=64", "rps", 1e3, "k req/s"),
            ("1-c256", "small, keep-alive, c=256", "rps", 1e3, "k req/s"),
            ("2-ab", "ab, no keep-alive, c=50", "rps", 1e3, "k req/s"),
            ("3-1mib", "1 MiB responses, c=16", "bytes_per_s", 1e9, "GB/s"),
            ("1-c1", "latency at c=1 (p50)", "p50_ms", 1, "ms"),
            ("4-hetero", "5/20/80 ms backends: p99", "p99_ms", 1, "ms"),
            ("8-tcp-small", "TCP mode, small, c=64", "rps", 1e3, "k req/s"),
            ("8-tcp-1mib", "TCP mode, 1 MiB, c=16", "bytes_per_s", 1e9, "GB/s"),
            ("6-selection", "txlb: 3 vs 1000 backends", "rps", 1e3, "k req/s"),
            ("15-hash", "hash of X-User, c=64", "rps", 1e3, "k req/s"),
            ("15-picks", "txlb: CPU per pick", "us_per_pick", 1, "µs"),
            ("7-idle", "idle connections: RSS held", "rss_held_mib", 1, "MiB"),
        )
        if cid in cells
    ]
    if not panels:
        return False
    cols = 3 if len(panels) > 4 else len(panels)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False
    )
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (cid, title, key, scale, unit) in zip(axes.flat, panels, strict=False):
        cell = cells[cid]
        names, values = [], []
        for p in _peers(cell):
            d = cell["peers"][p]
            v = d.get(key) if cid == "7-idle" else d.get("median", {}).get(key)
            if v is not None:
                names.append(p)
                values.append(v / scale)
        colors = ["#d62728" if n.startswith("txlb") else "#7f7f7f" for n in names]
        bars = ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(unit, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
        ax.margins(x=0.18)
    meta = results["meta"]
    fig.suptitle(
        f"txlb and its peers, one core each ({meta['started'][:10]}, median of"
        f" {results['settings']['runs']} runs)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: dict[str, Any], prefix: Path, with_chart: bool = True) -> list[Path]:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    j = prefix.with_suffix(".json")
    tmp = j.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    tmp.replace(j)
    written.append(j)
    md = prefix.with_suffix(".md")
    md.write_text(markdown(results))
    written.append(md)
    png = prefix.with_suffix(".png")
    if with_chart and chart(results, png):
        written.append(png)
    return written


def main() -> None:
    for name in sys.argv[1:]:
        path = Path(name)
        results = json.loads(path.read_text())
        finish(results)
        for p in write(results, path.with_suffix("")):
            print(f"wrote {p}")


if __name__ == "__main__":
    main()
