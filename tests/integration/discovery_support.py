"""
What the discovery integration tests share: demo backends on any loopback
address, twistd with a test's own lb.ini, wrk load that is stopped when the
test is done, and waiting on /api/server-stats.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import TWISTD, Processes, free_port
from tests.processes import spawn

WRK = shutil.which("wrk")


def wait_for(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{log.read_text()}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} never opened:\n{log.read_text()}")


def demo_backend(
    processes: Processes, name: str, host: str, port: int
) -> subprocess.Popen[bytes]:
    """A demo backend on C{host} (any 127.x address), stopped after the test."""
    assert host.startswith("127."), host  # nothing outside loopback, ever
    log = processes.directory / f"{name}.log"
    argv = [sys.executable, "-m", "backends", "--name", name, "--host", host]
    proc = spawn([*argv, "--port", str(port)], log)
    processes.procs.append(proc)
    wait_for(host, port, proc, log)
    return proc


class Balancer:
    """twistd -n txlb with a test's lb.ini (its [txlb] listen added here)."""

    def __init__(
        self, processes: Processes, text: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.directory = processes.directory
        self.ini = self.directory / "lb.ini"
        self.ini.write_text(
            f"[txlb]\nlisten = tcp:{self.port}:interface=127.0.0.1\n"
            f"shutdown_timeout = 1s\n{text}"
        )
        self.log = self.directory / "txlb.log"
        argv = [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(self.ini)]
        self.proc = spawn(argv, self.log, env={**os.environ, **(env or {})})
        processes.procs.append(self.proc)
        wait_for("127.0.0.1", self.port, self.proc, self.log)
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/api/server-stats", timeout=5) as r:
            return json.load(r)  # type: ignore[no-any-return]

    def backends(self) -> dict[str, dict[str, Any]]:
        return {b["name"]: b for b in self.stats()["backends"]}

    def section(self, name: str) -> dict[str, Any]:
        (found,) = [s for s in self.stats()["discovery"] if s["name"] == name]
        return found  # type: ignore[no-any-return]

    def wait(self, what: Callable[[], bool], why: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                stats = json.dumps(self.stats(), indent=1)
                raise AssertionError(f"timed out waiting for {why}:\n{stats}")
            time.sleep(0.1)

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def text(self) -> str:
        return self.log.read_text()


class Load:
    """wrk against the balancer until stopped; then its counts."""

    def __init__(self, directory: Path, port: int, connections: int = 8) -> None:
        assert WRK is not None
        self.log = directory / "wrk.log"
        argv = [
            WRK,
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            "600s",
            "--timeout",
            "10s",
        ]
        self.proc = spawn([*argv, f"http://127.0.0.1:{port}/"], self.log)

    def stop(self) -> dict[str, int]:
        """Stop wrk (SIGINT: it prints its summary) and read it."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=20)
        text = self.log.read_text()
        match = re.search(r"(\d+) requests in", text)
        errors = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
            text,
        )
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        return {
            "requests": int(match.group(1)) if match else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        }
