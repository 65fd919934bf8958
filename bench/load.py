"""
The load generators: wrk (keep-alive, latency percentiles through a Lua
C{done} hook) and ab (HTTP/1.0, a new connection per request), each pinned to
the load CPU, their output parsed into plain dicts.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from procs import BenchError

__all__ = ["ab", "write_users_script", "write_wrk_scripts", "wrk"]

# wrk calls done() once, after every thread stopped; thread:get copies each
# thread's status table into the main Lua state.
_WRK_DONE = r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local e = summary.errors
  local statuses = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for code, n in pairs(s) do
        statuses[#statuses + 1] = string.format('"%d":%d', code, n)
      end
    end
  end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f,'
      .. '"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, table.concat(statuses, ",")))
end
"""

# Counting statuses costs a Lua call per response: only where they matter.
_WRK_STATUSES = r"""
function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
"""


# Each request as one of 10,000 users (X-User), drawn at random (seeded).
_WRK_USERS = r"""
function init(args)
  math.randomseed(1)
end

function request()
  return wrk.format(nil, nil, {["X-User"] = "user-" .. math.random(10000)})
end
"""


def write_users_script(workdir: Path) -> Path:
    """The wrk script whose requests carry one of 10,000 X-User values."""
    path = workdir / "wrk_users.lua"
    path.write_text(_WRK_USERS + _WRK_DONE)
    return path


def write_wrk_scripts(workdir: Path) -> dict[bool, Path]:
    """The two wrk scripts, keyed by whether they count statuses."""
    plain = workdir / "wrk_report.lua"
    plain.write_text(_WRK_DONE)
    counting = workdir / "wrk_report_statuses.lua"
    counting.write_text(_WRK_STATUSES + _WRK_DONE)
    return {False: plain, True: counting}


def wrk(
    url: str,
    connections: int,
    seconds: float,
    script: Path,
    cpu: int,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """One wrk run (one thread); requests per second, bytes, latency in ms."""
    duration = max(1, round(seconds))
    command = [
        "taskset",
        "-c",
        str(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={timeout:g}s",
        "-s",
        str(script),
        url,
    ]
    out = _run(command, duration + timeout + 30)
    match = re.search(r"^WRKJSON (.*)$", out, re.MULTILINE)
    if not match:
        raise BenchError(f"wrk printed no result for {url}:\n{out[-2000:]}")
    raw = json.loads(match.group(1))
    elapsed = raw["duration_us"] / 1e6
    errors = raw["errors"]
    return {
        "requests": raw["requests"],
        "seconds": round(elapsed, 3),
        "rps": round(raw["requests"] / elapsed, 1),
        "bytes_per_s": round(raw["bytes"] / elapsed),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": round(raw["mean_us"] / 1000, 4),
        # status: answers other than 2xx/3xx; the rest are socket errors.
        "errors": errors,
        "socket_errors": sum(v for k, v in errors.items() if k != "status"),
        "statuses": {int(k): v for k, v in raw["statuses"].items()},
    }


_AB_FIELDS = {
    "complete": r"^Complete requests:\s+(\d+)",
    "failed": r"^Failed requests:\s+(\d+)",
    "non_2xx": r"^Non-2xx responses:\s+(\d+)",
    "rps": r"^Requests per second:\s+([\d.]+)",
    "mean_ms": r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$",
    "seconds": r"^Time taken for tests:\s+([\d.]+)",
    "p50_ms": r"^\s+50%\s+(\d+)",
    "p99_ms": r"^\s+99%\s+(\d+)",
}


def ab(url: str, concurrency: int, seconds: float, cpu: int) -> dict[str, Any]:
    """One ab run: HTTP/1.0, no keep-alive, for C{seconds}."""
    command = [
        "taskset",
        "-c",
        str(cpu),
        "ab",
        "-q",
        "-r",  # keep going after a socket error, and count it
        "-s",
        "10",
        "-t",
        f"{seconds:g}",
        "-n",
        "10000000",  # after -t: the time limit ends the run
        "-c",
        str(concurrency),
        url,
    ]
    out = _run(command, seconds + 60)
    result: dict[str, Any] = {}
    for key, pattern in _AB_FIELDS.items():
        match = re.search(pattern, out, re.MULTILINE)
        if match:
            result[key] = float(match.group(1))
        elif key == "non_2xx":
            result[key] = 0
        else:
            raise BenchError(f"ab printed no {key!r} for {url}:\n{out[-2000:]}")
    result["requests"] = int(result.pop("complete"))
    result["failed"] = int(result["failed"])
    result["non_2xx"] = int(result["non_2xx"])
    return result


def _run(command: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{command[3]} did not finish in {timeout:g}s") from None
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace")
        raise BenchError(
            f"{command[3]} exited with status {done.returncode}:\n{out[-1500:]}"
            f"\n{err[-1500:]}"
        )
    return out
