"""
Processes, ports and measurements of processes for the benchmark runner.

Every process the bench starts goes through L{Processes}: it runs in a session
of its own, pinned to one CPU with C{taskset}, its output in a log file, and
is stopped (SIGTERM, then SIGKILL) by its process-group id when the run ends,
however it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "BenchError",
    "Proc",
    "Processes",
    "StartError",
    "cpu_seconds",
    "free_ports",
    "get_json",
    "rss_bytes",
    "wait_http",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure the runner reports in one line and records in the results."""


class StartError(BenchError):
    """A process did not start, or did not answer in time."""


class Proc:
    """One started process and its log."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        """The last lines of the process's output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """The processes of one run; L{stop_all} ends every one still running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cpu: int | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pipes: bool = False,
    ) -> Proc:
        """
        Start C{argv} pinned to C{cpu} (C{None}: not pinned).

        @param pipes: give the process pipes for standard input and output
            (standard error still goes to its log).
        """
        log = self.workdir / f"{name}.log"
        command = list(argv)
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with log.open("ab") as out:
            try:
                popen = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                    stdout=subprocess.PIPE if pipes else out,
                    stderr=out if pipes else subprocess.STDOUT,
                    env=full_env,
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as e:
                raise StartError(f"{name}: cannot run {command[0]}: {e}") from None
        proc = Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        """Stop C{proc} and its process group: SIGTERM, then SIGKILL."""
        if proc in self._procs:
            self._procs.remove(proc)
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.popen.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.popen.wait(5)
        # Children that outlived their leader (an nginx worker) go too.
        _signal_group(proc, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in reversed(list(self._procs)):
            with contextlib.suppress(Exception):
                self.stop(proc)


def _signal_group(proc: Proc, signum: int) -> None:
    # The group id is the leader's pid: each process was started in its own
    # session.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def free_ports(count: int, taken: set[int]) -> list[int]:
    """
    C{count} loopback ports free now, below the ephemeral range (so outgoing
    connections never take them), none of them in C{taken}, which they join.
    """
    low, high = 20000, 32000
    ports: list[int] = []
    start = random.randrange(low, high)
    for offset in range(high - low):
        port = low + (start - low + offset) % (high - low)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        taken.add(port)
        if len(ports) == count:
            return ports
    raise BenchError(f"found only {len(ports)} of {count} free loopback ports")


def wait_http(url: str, proc: Proc | None, timeout: float, name: str) -> None:
    """
    Wait until C{url} answers any HTTP status; raise L{StartError} with the
    process's last output if it exits or C{timeout} passes first.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        if proc is not None and not proc.alive():
            raise StartError(
                f"{name} exited with status {proc.popen.returncode} before"
                f" answering {url}; its output ({proc.log}):\n{proc.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
            return
        except urllib.error.HTTPError:
            return
        except OSError as e:
            last = str(e)
        if time.monotonic() > deadline:
            tail = f"; its output ({proc.log}):\n{proc.tail()}" if proc else ""
            raise StartError(
                f"{name} did not answer {url} within {timeout:g}s ({last}){tail}"
            )
        time.sleep(0.1)


def get_json(url: str, timeout: float = 5.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _tree(pid: int) -> list[int]:
    """C{pid} and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of C{pid} and its descendants, in bytes."""
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of C{pid} and its descendants."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK
