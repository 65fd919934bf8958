"""
What the discovery integration tests share: demo backends on any loopback
address, twistd with a test's own lb.ini, wrk load that is stopped when the
test is done, and waiting on /api/server-stats.
"""

from __future__ import annotations

import getpass
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

import pytest

from tests.integration.conftest import TWISTD, Processes, free_port
from tests.processes import spawn

WRK = shutil.which("wrk")
DNSMASQ = shutil.which("dnsmasq") or (
    "/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None
)

TTL = 1


class Dnsmasq:
    """
    dnsmasq on 127.0.0.1:PORT answering for lb.test only: A records from a
    hosts directory (re-read on change, by inotify), SRV records and their
    targets from its config file (re-read on restart).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port_udp()
        self.hosts = directory / "hosts"
        self.hosts.mkdir()
        self.conf = directory / "dnsmasq.conf"
        self.log = directory / "dnsmasq.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.srv: list[tuple[str, int, int, int]] = []

    def a_records(self, name: str, *addresses: str) -> None:
        """C{name}'s A records now (none: the name is gone, NXDOMAIN)."""
        path = self.hosts / name
        tmp = self.hosts / f".{name}.tmp"
        tmp.write_text("".join(f"{address} {name}\n" for address in addresses))
        tmp.rename(path)  # one inotify event for the whole file

    def start(self) -> None:
        lines = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "local=/lb.test/",  # never forwarded anywhere: NXDOMAIN if unknown
            f"hostsdir={self.hosts}",
            f"local-ttl={TTL}",
            "log-queries",
            "log-facility=-",
        ]
        for target, port, priority, weight in self.srv:
            lines.append(
                f"srv-host=_app._tcp.lb.test,{target}.lb.test,{port},{priority},{weight}"
            )
        self.conf.write_text("\n".join(lines) + "\n")
        argv = [DNSMASQ, "--keep-in-foreground", f"--conf-file={self.conf}"]
        argv += ["--pid-file=", f"--user={getpass.getuser()}"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while "read " + str(self.hosts) not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def queries(self, name: str) -> int:
        return len(re.findall(rf"query\[A\] {re.escape(name)} ", self.log.read_text()))


def free_port_udp() -> int:
    import socket

    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@pytest.fixture(name="dnsmasq")
def dnsmasq_fixture(tmp_path: Path) -> Any:
    server = Dnsmasq(tmp_path)
    yield server
    server.stop()


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
