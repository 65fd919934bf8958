"""
The soak's processes: one real ``twistd -n txlb`` and its demo backends,
lb.ini rewritten and reloaded (SIGHUP) by the chaos, and a sampler of
txlb's memory, descriptors and stats.

The chaos runs one act every C{period} seconds, in a fixed cycle (the
choices within an act come from a seeded random generator): re-weight a
backend, replace one (drain, kill, restart on a new port), add one, kill
one hard (SIGKILL with requests in flight, then replace it), remove one.
Every act is a reload.  A backend is killed after a drain only once txlb
has dropped it from /api/server-stats, which it does when its last
request has finished: a backend that stays draining would be a leaked
lease, and is counted as one.  A restarted backend gets a new name as
well as a new port: a reload never moves a backend's address.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from soak_load import Tally

MIN_BACKENDS = 3
MAX_BACKENDS = 6
DRAIN_LIMIT = 30.0


def free_port(used: set[int]) -> int:
    """A free loopback port never handed out before in this soak."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in used:
            used.add(port)
            return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name}: exited early:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{log.name}: port {port} never opened")


class Member:
    """One demo backend process, and its entry in lb.ini."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.weight = 1
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, f"{self.name} not started"
        return self._proc


class Fleet:
    """txlb, its backends and its lb.ini."""

    def __init__(self, workdir: Path, header_timeout: float) -> None:
        self.workdir = workdir
        self.header_timeout = header_timeout
        self.python = sys.executable
        self.twistd = str(Path(self.python).parent / "twistd")
        self.used: set[int] = set()
        self.port = free_port(self.used)
        self.stats_port = free_port(self.used)
        self.members: list[Member] = []  # in lb.ini
        self.all: list[Member] = []  # every backend process started
        self.txlb: subprocess.Popen[bytes] | None = None
        self.reloads = 0
        self._serial = 0

    @property
    def log(self) -> Path:
        return self.workdir / "txlb.log"

    def new_member(self, start: bool = True) -> Member:
        """A backend with a new name and port, its process started if C{start}."""
        self._serial += 1
        name = f"web{self._serial}"
        member = Member(name, free_port(self.used))
        if start:
            self.start(member)
        return member

    def start(self, member: Member) -> None:
        log = self.workdir / f"{member.name}.log"
        argv = [self.python, "-m", "backends", "--name", member.name]
        argv += ["--port", str(member.port), "--delay", "1ms-3ms"]
        with open(log, "wb") as out:
            member._proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.all.append(member)
        wait_for_port(member.port, member.proc, log)

    def ini(self) -> str:
        text = (
            "[txlb]\n"
            f"listen = tcp:{self.port}:interface=127.0.0.1\n"
            f"stats_listen = tcp:{self.stats_port}:interface=127.0.0.1\n"
            f"header_timeout = {self.header_timeout:g}s\n"
            "shutdown_timeout = 2s\n"
            "[health]\n"
            "path = /health\n"
            "interval = 1s\n"
            "timeout = 500ms\n"
        )
        for m in self.members:
            text += (
                f"[backend:{m.name}]\naddress = 127.0.0.1:{m.port}\n"
                f"weight = {m.weight}\nmax_connections = 8\n"
            )
        return text

    def write(self) -> None:
        path = self.workdir / "lb.ini"
        part = path.with_suffix(".part")
        part.write_text(self.ini())
        part.replace(path)  # a reload never reads half a file

    def start_txlb(self) -> None:
        self.write()
        argv = [self.twistd, "-n", "--pidfile=", "txlb"]
        argv += ["--config", str(self.workdir / "lb.ini")]
        with open(self.log, "wb") as out:
            self.txlb = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.txlb, self.log)
        wait_for_port(self.stats_port, self.txlb, self.log)

    def reload(self) -> None:
        assert self.txlb is not None
        self.write()
        self.txlb.send_signal(signal.SIGHUP)
        self.reloads += 1

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.stats_port}/api/server-stats"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)  # type: ignore[no-any-return]

    def stop_backends(self) -> None:
        for m in self.all:
            if m.proc.poll() is None:
                m.proc.terminate()
        for m in self.all:
            try:
                m.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()

    def stop_txlb(self) -> int | None:
        if self.txlb is None:
            return None
        self.txlb.terminate()
        try:
            return self.txlb.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.txlb.kill()
            self.txlb.wait()
            return None


class Chaos(threading.Thread):
    """The acts of the module docstring, one every C{period} seconds."""

    def __init__(
        self,
        fleet: Fleet,
        tally: Tally,
        stop: threading.Event,
        seed: int,
        period: float,
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.fleet = fleet
        self.tally = tally
        self.stop = stop
        self.rng = random.Random(seed)
        self.period = period
        self.leaving: list[tuple[Member, float, bool]] = []  # member, since, kill
        self.lock = threading.Lock()

    def run(self) -> None:
        cycle = [
            self.reweight,
            self.replace,
            self.reweight,
            self.add,
            self.hard_kill,
            self.reweight,
            self.remove,
            self.replace,
        ]
        turn = 0
        while not self.stop.wait(self.period):
            act = cycle[turn % len(cycle)]
            turn += 1
            try:
                act()
                self.reap()
            except Exception as e:  # the soak goes on, and says so
                self.tally.fail("chaos_error", f"{act.__name__}: {e!r}")

    def pick(self) -> Member:
        return self.rng.choice(self.fleet.members)

    def reweight(self) -> None:
        member = self.pick()
        member.weight = self.rng.choice([w for w in (1, 2, 3, 5) if w != member.weight])
        self.fleet.reload()
        self.tally.add("chaos_reweights")

    def add(self) -> None:
        if len(self.fleet.members) >= MAX_BACKENDS:
            return self.remove()
        self.fleet.members.append(self.fleet.new_member())
        self.fleet.reload()
        self.tally.add("chaos_adds")
        return None

    def remove(self) -> None:
        if len(self.fleet.members) <= MIN_BACKENDS:
            return self.add()
        self._leave(self.pick(), kill=True)
        self.fleet.reload()
        self.tally.add("chaos_removes")
        return None

    def replace(self) -> None:
        """Drain one out (it is killed once dropped) and start another."""
        new = self.fleet.new_member()
        self._leave(self.pick(), kill=True)
        self.fleet.members.append(new)
        self.fleet.reload()
        self.tally.add("chaos_replaces")

    def hard_kill(self) -> None:
        """SIGKILL one in rotation, with whatever it has in flight, then replace it."""
        victim = self.pick()
        victim.proc.kill()
        victim.proc.wait()
        new = self.fleet.new_member()
        self._leave(victim, kill=False)
        self.fleet.members.append(new)
        self.fleet.reload()
        self.tally.add("chaos_hard_kills")

    def _leave(self, member: Member, kill: bool) -> None:
        self.fleet.members.remove(member)
        with self.lock:
            self.leaving.append((member, time.monotonic(), kill))

    def reap(self) -> None:
        """Kill the drained backends txlb has dropped; count those stuck."""
        with self.lock:
            if not self.leaving:
                return
            names = {b["name"] for b in self.fleet.stats()["backends"]}
            still = []
            for member, since, kill in self.leaving:
                if member.name not in names:
                    if kill:
                        member.proc.kill()
                        member.proc.wait()
                        self.tally.add("chaos_drained_kills")
                    self.tally.add("drained_and_dropped")
                elif time.monotonic() - since > DRAIN_LIMIT:
                    self.tally.fail(
                        "drain_stuck", f"{member.name} draining for {DRAIN_LIMIT:g}s"
                    )
                else:
                    still.append((member, since, kill))
            self.leaving = still


class Sampler(threading.Thread):
    """txlb's VmRSS, open descriptors and stats, every C{period} seconds."""

    def __init__(self, fleet: Fleet, stop: threading.Event, period: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.fleet = fleet
        self.stop = stop
        self.period = period
        self.started = time.monotonic()
        self.samples: list[dict[str, float]] = []

    def run(self) -> None:
        while not self.stop.wait(self.period):
            sample: dict[str, float] = {"t": round(time.monotonic() - self.started, 1)}
            sample.update(process_figures(self.fleet))
            try:
                stats = self.fleet.stats()
            except OSError:
                stats = None
            if stats is not None:
                totals = stats["totals"]
                sample["active"] = totals["active_connections"]
                sample["queued"] = totals["queued"]
                sample["rps"] = totals["rps"]
                sample["clients"] = stats["clients"]["connections"]
                sample["backends"] = totals["backends"]
            self.samples.append(sample)


def process_figures(fleet: Fleet) -> dict[str, float]:
    """txlb's resident memory (MiB) and open descriptors now."""
    assert fleet.txlb is not None
    pid = fleet.txlb.pid
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return {"rss_mib": round(rss, 2), "fds": len(os.listdir(f"/proc/{pid}/fd"))}
