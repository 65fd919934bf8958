"""
Graceful shutdown, reload and restart with a real ``twistd``, demo backends
and ``ab``: SIGTERM lets requests in flight finish and exits 0; SIGHUP
applies a new lb.ini under load without a failed request; a restart with
the listening socket held (as systemd's socket activation does) loses none.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import TWISTD, Backend, Balancer
from tests.processes import spawn, stop_all

AB = shutil.which("ab")
needs_ab = pytest.mark.skipif(AB is None, reason="ab (apache2-utils) is not installed")


def get(port: int, path: str = "/", timeout: float = 15) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until(what: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def ab_results(output: str) -> dict[str, int]:
    found = {}
    for key in ("Complete requests", "Failed requests", "Non-2xx responses"):
        match = re.search(rf"^{key}:\s+(\d+)", output, re.MULTILINE)
        found[key] = int(match.group(1)) if match else 0
    return found


def start_ab(port: int, seconds: float, log: Path, keep_alive: bool) -> Any:
    argv = [AB, "-q", "-t", str(seconds), "-n", "10000000", "-c", "10", "-s", "20"]
    if keep_alive:
        argv.append("-k")
    return spawn([*argv, f"http://127.0.0.1:{port}/"], log)


def test_sigterm_drains_in_flight_requests(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """
    SIGTERM: the port closes at once, the five requests in flight (1 s each)
    are answered, an idle keep-alive connection does not hold the shutdown,
    and twistd exits 0 soon after the last answer.
    """
    slow = demo_backend("slow", delay="1s")
    lb = balancer([("slow", slow.port)], extra="shutdown_timeout = 10s")
    idle = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=15)
    idle.request("GET", "/api/server-stats")
    idle.getresponse().read()  # now an idle keep-alive connection
    results: list[tuple[int, bytes]] = []

    def one() -> None:
        results.append(get(lb.port))

    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    wait_until(lambda: lb.stats()["totals"]["active_connections"] == 5)
    started = time.monotonic()
    lb.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", lb.port), timeout=1)
    assert lb.proc.wait(timeout=10) == 0
    took = time.monotonic() - started
    for t in threads:
        t.join()
    assert [status for status, _ in results] == [200] * 5
    # Waited for the requests (1 s), not for the idle connection or the timeout.
    assert 0.5 < took < 3, took
    log = lb.log.read_text()
    assert re.search(r"draining [67] client connections", log), log
    assert "every connection is closed" in log


def test_sigterm_timeout_aborts(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """A request still running at shutdown_timeout is cut off; the exit is 0."""
    stuck = demo_backend("stuck", delay="30s")
    lb = balancer([("stuck", stuck.port)], extra="shutdown_timeout = 1s")
    errors: list[BaseException] = []

    def one() -> None:
        try:
            get(lb.port)
        except (OSError, http.client.HTTPException) as e:
            errors.append(e)

    thread = threading.Thread(target=one)
    thread.start()
    wait_until(lambda: lb.stats()["totals"]["active_connections"] == 1)
    started = time.monotonic()
    lb.proc.send_signal(signal.SIGTERM)
    assert lb.proc.wait(timeout=10) == 0
    assert 0.9 < time.monotonic() - started < 3
    thread.join()
    assert len(errors) == 1
    assert "aborting 1 connections still open" in lb.log.read_text()


@needs_ab
def test_reload_under_load(
    demo_backend: Callable[..., Backend],
    balancer: Callable[..., Balancer],
    tmp_path: Path,
) -> None:
    """
    SIGHUP under ``ab -k`` load: c added, b removed (drained), a re-weighted,
    no failed request; c gets traffic, b none once gone.  Then an invalid
    file is rejected and the balancer keeps serving the same backends.
    """
    a, b, c = (demo_backend(n, delay="2ms") for n in "abc")
    lb = balancer([("a", a.port), ("b", b.port)])
    ini = tmp_path / "lb.ini"
    text = ini.read_text()
    ab = start_ab(lb.port, 4, tmp_path / "ab.log", keep_alive=True)
    time.sleep(1)
    new = text.replace(f"[backend:b]\naddress = 127.0.0.1:{b.port}\n", "")
    new = new.replace(f"127.0.0.1:{a.port}\n", f"127.0.0.1:{a.port}\nweight = 2\n")
    ini.write_text(new + f"[backend:c]\naddress = 127.0.0.1:{c.port}\n")
    lb.proc.send_signal(signal.SIGHUP)

    def names() -> list[str]:
        return [x["name"] for x in lb.stats()["backends"]]

    wait_until(lambda: names() == ["a", "c"])
    b_total = b.stats()["requests"]
    weights = {x["name"]: x["configured_weight"] for x in lb.stats()["backends"]}
    assert weights == {"a": 2.0, "c": 1.0}
    time.sleep(1)
    ini.write_text("[txlb]\nretries = many\n")
    lb.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload rejected" in lb.log.read_text())
    assert ab.wait(timeout=30) == 0
    results = ab_results((tmp_path / "ab.log").read_text())
    assert results["Complete requests"] > 500, results
    assert results["Failed requests"] == 0, results
    assert results["Non-2xx responses"] == 0, results
    assert names() == ["a", "c"]
    assert get(lb.port)[0] == 200
    assert c.stats()["requests"] > 100
    assert b.stats()["requests"] == b_total
    log = lb.log.read_text()
    assert f"{ini}: [txlb] retries: 'many' is not valid" in log
    assert "backend b removed" in log


@pytest.fixture
def held_socket() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    yield sock
    sock.close()


@needs_ab
def test_restart_with_socket_activation_under_load(
    demo_backend: Callable[..., Backend],
    held_socket: socket.socket,
    tmp_path: Path,
) -> None:
    """
    With the listening socket held across the restart (as systemd's
    txlb.socket does; LISTEN_FDS protocol, fd 3), stopping txlb with SIGTERM
    and starting it again under ``ab`` load loses no request: connections
    wait in the socket's backlog meanwhile.
    """
    web = demo_backend("web1", delay="2ms")
    ini = tmp_path / "lb.ini"
    ini.write_text(
        "[txlb]\nlisten = systemd:domain=INET:index=0\n"
        f"[backend:web1]\naddress = 127.0.0.1:{web.port}\n"
    )
    port = held_socket.getsockname()[1]
    fd = held_socket.fileno()

    def activate() -> subprocess.Popen[bytes]:
        # What systemd does for a socket unit: the socket as fd 3, and
        # LISTEN_PID set to the service's own pid.
        def child() -> None:
            os.dup2(fd, 3)
            os.environ.update(
                LISTEN_FDS="1", LISTEN_FDNAMES="http", LISTEN_PID=str(os.getpid())
            )

        argv = [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(ini)]
        log = tmp_path / f"txlb-{len(procs)}.log"
        proc = spawn(argv, log, pass_fds=(3, fd), preexec_fn=child)
        procs.append(proc)
        return proc

    procs: list[subprocess.Popen[bytes]] = []
    try:
        first = activate()
        assert get(port)[0] == 200
        ab = start_ab(port, 4, tmp_path / "ab.log", keep_alive=False)
        procs.append(ab)
        time.sleep(1.5)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
        activate()
        assert ab.wait(timeout=40) == 0
        results = ab_results((tmp_path / "ab.log").read_text())
        assert results["Complete requests"] > 500, results
        assert results["Failed requests"] == 0, results
        assert results["Non-2xx responses"] == 0, results
        assert get(port)[0] == 200
    finally:
        stop_all(procs)
    # The first process drained: it logged the stop.
    assert "shutting down" in (tmp_path / "txlb-0.log").read_text()
