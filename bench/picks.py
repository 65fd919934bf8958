"""
CPU time per pick, for each algorithm, at 3 and 1000 backends: a
micro-benchmark of txlb's selection alone (no sockets), run by
C{bench/run.py} in scenario 15 (cell 15-picks) or on its own:

  python bench/picks.py                     # every algorithm, 3 and 1000 backends
  python bench/picks.py --seconds 0.5 --algorithms p2c,hash
  python bench/picks.py --algorithms least_conn --workers 1,2   # shared counting

A pick here is what one request costs the registry: C{acquire} (with a key
from 10,000 users for C{hash}) and, 64 picks later, that lease's
C{release}, so 64 requests are always in flight, as under load.  The clock
moves 1 ms every 10 picks (10,000 requests a second), so the decision log
samples as it would.  Prints one JSON object: microseconds of CPU per pick.

With C{--workers N} above 1, the registry is one worker's of N: its counts
in a shared file of N workers (the others' cells read at every pick, its
own written at every lease change), as C{workers = N} runs it; what that
costs a pick against one process (C{--workers 1,2}) is the price of exact
counts across processes, apart from what N processes sharing a machine
cost each other.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from pathlib import Path
from random import Random

if "PYTHONPATH" not in os.environ:
    # On its own: the working tree's txlb (run.py passes the tree it measures).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock

from txlb.config import Address, BackendConfig, BalancingConfig, Config, OutlierConfig
from txlb.core.algorithms import POLICIES
from txlb.core.registry import Lease, Registry
from txlb.workers.counting import WorkerCounts
from txlb.workers.replica import Replica
from txlb.workers.shm import Counts

IN_FLIGHT = 64
USERS = [b"user-%d" % i for i in range(10_000)]


def registry(algorithm: str, backends: int) -> tuple[Registry, Clock]:
    clock = Clock()
    clock.advance(1_000_000)
    config = Config(
        filename="picks",
        backends=tuple(
            BackendConfig(f"b{i}", Address("127.0.0.1", 20000 + i))
            for i in range(backends)
        ),
        balancing=BalancingConfig(algorithm=algorithm),
    )
    return Registry.from_config(config, clock, Random(1).random), clock


def worker_registry(
    algorithm: str, backends: int, workers: int
) -> tuple[Registry, Clock, Counts]:
    """Worker 0's registry of C{workers}, on one shared counts file."""
    clock = Clock()
    clock.advance(1_000_000)
    counts = Counts.create(workers, slots=backends)
    reg = Registry(
        BalancingConfig(algorithm=algorithm), OutlierConfig(), clock, Random(1).random
    )
    reg.quiet = True
    shared = WorkerCounts(counts, 0, reg.selector, clock)
    reg.selector.share(shared)
    replica = Replica(reg, shared, _Unheard())  # type: ignore[arg-type]
    reg.outcomes = replica
    for i in range(backends):
        spec = BackendConfig(f"b{i}", Address("127.0.0.1", 20000 + i))
        replica.added(i, spec, _HEALTHY)
    return reg, clock, counts


class _Unheard:
    """The supervisor's link: nothing is sent here (no failures)."""

    def send(self, command: object, **arguments: object) -> None:
        pass


_HEALTHY = {
    "healthy": True,
    "probed": True,
    "ejected": False,
    "draining": False,
    "leaving": False,
    "configured_weight": 1.0,
    "ramp_start": 0.0,
    "reason": "configured",
}


def measure(
    algorithm: str, backends: int, seconds: float, workers: int = 1
) -> dict[str, float]:
    """CPU microseconds per pick (acquire and, later, release)."""
    counts = None
    if workers > 1:
        reg, clock, counts = worker_registry(algorithm, backends, workers)
    else:
        reg, clock = registry(algorithm, backends)
    held: deque[Lease] = deque()
    keys = USERS
    count = len(keys)
    acquire = reg.acquire
    picks = 0
    started = time.process_time()
    deadline = started + seconds
    while True:
        for i in range(1000):
            if not i % 10:
                clock.advance(0.001)
            lease = acquire((), keys[(picks + i) * 7919 % count])
            assert lease is not None
            held.append(lease)
            if len(held) > IN_FLIGHT:
                held.popleft().release()
        picks += 1000
        now = time.process_time()
        if now >= deadline:
            break
    used = now - started
    while held:
        held.popleft().release()
    if counts is not None:
        counts.close()
    return {"us_per_pick": round(used / picks * 1e6, 3), "picks": picks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithms", default=",".join(POLICIES))
    parser.add_argument("--backends", default="3,1000")
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU per cell")
    parser.add_argument(
        "--workers", default="1", help="e.g. 1,2: one process, and worker 0 of 2"
    )
    args = parser.parse_args(argv)
    out = {}
    for algorithm in args.algorithms.split(","):
        for n in (int(x) for x in args.backends.split(",")):
            for w in (int(x) for x in args.workers.split(",")):
                cell = f"{algorithm}-{n}" + (f"-w{w}" if w > 1 else "")
                out[cell] = measure(algorithm, n, args.seconds, w)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
