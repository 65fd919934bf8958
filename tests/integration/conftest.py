"""
Fixtures that run real processes: demo backends and ``twistd -n txlb``.

Every process is started on free loopback ports and stopped after its test.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import spawn, stop_all, wait_for_port

BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Starts processes and stops every one of them at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], port: int) -> subprocess.Popen[bytes]:
        log = self.directory / f"{name}.log"
        proc = spawn(argv, log)
        self.procs.append(proc)
        wait_for_port(port, proc, log)
        return proc

    def stop(self) -> None:
        stop_all(self.procs)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop()


class Backend:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_demo/stats", timeout=5) as r:
            return json.load(r)  # type: ignore[no-any-return]

    def control(self, what: str, value: str) -> None:
        request = urllib.request.Request(
            f"{self.url}/_demo/{what}", data=value.encode(), method="PUT"
        )
        urllib.request.urlopen(request, timeout=5).close()


@pytest.fixture
def demo_backend(processes: Processes) -> Callable[..., Backend]:
    def start(name: str, delay: str = "0", capacity: int = 0) -> Backend:
        port = free_port()
        argv = [sys.executable, "-m", "backends", "--name", name, "--port", str(port)]
        argv += ["--delay", delay, "--capacity", str(capacity)]
        processes.start(name, argv, port)
        return Backend(name, port)

    return start


class Balancer:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/api/server-stats", timeout=5) as r:
            return json.load(r)  # type: ignore[no-any-return]

    def peak_memory_mib(self) -> float:
        """The process's peak resident memory (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")


@pytest.fixture
def balancer(processes: Processes, tmp_path: Path) -> Callable[..., Balancer]:
    def start(
        backends: list[tuple[str, int]],
        extra: str = "",
        health: str = "",
        twistd: str = TWISTD,
        options: tuple[str, ...] = (),
    ) -> Balancer:
        """
        @param twistd: the twistd to run (another installation's).
        @param options: twistd's own options, before C{txlb}.
        """
        port = free_port()
        ini = tmp_path / "lb.ini"
        text = f"[txlb]\nlisten = tcp:{port}:interface=127.0.0.1\n"
        # Kept with the test's files, for reading when a test fails.
        text += f"access_log = {tmp_path / 'access.log'}\naccess_log_format = json\n"
        text += f"{extra}\n"
        if "shutdown_timeout" not in extra:
            # Teardown's SIGTERM need not wait for what a test left open
            # (a WebSocket tunnel drains until it ends).
            text += "shutdown_timeout = 1s\n"
        text += f"[health]\n{health}\n"
        for name, backend_port in backends:
            text += f"[backend:{name}]\naddress = 127.0.0.1:{backend_port}\n"
        ini.write_text(text)
        argv = [twistd, "-n", "--pidfile=", *options, "txlb", "--config", str(ini)]
        proc = processes.start("txlb", argv, port)
        return Balancer(proc, port, tmp_path / "txlb.log")

    return start
