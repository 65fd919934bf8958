"""
End to end failure handling: real twistd, real demo backends, real ab.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable

from tests.integration.conftest import Backend, Balancer, Processes
from tests.integration.test_twistd import assert_no_leaks, get, run_tool


def wait_until(condition: Callable[[], bool], seconds: float) -> float:
    """Poll; return how long it took (raise if it never held)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not true within {seconds}s")
        time.sleep(0.02)
    return time.monotonic() - started


def test_killing_a_backend_under_load_loses_no_get(
    demo_backend: Callable[..., Backend],
    balancer: Callable[..., Balancer],
    processes: Processes,
) -> None:
    """ab -c 50 runs while one of three backends is killed: zero failed GETs
    (in-flight requests are replayed elsewhere, new ones skip it)."""
    backends = [demo_backend(f"web{i}", delay="5ms") for i in range(3)]
    lb = balancer([(b.name, b.port) for b in backends])
    ab = subprocess.Popen(
        ["ab", "-n", "8000", "-c", "50", f"{lb.url}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_until(lambda: backends[1].stats()["requests"] > 300, 20)
    victim = processes.procs[1]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    out, _ = ab.communicate(timeout=120)
    assert ab.returncode == 0, out
    assert re.search(r"Complete requests:\s+8000", out), out
    assert re.search(r"Failed requests:\s+0\b", out), out
    assert "Non-2xx" not in out, out
    stats = lb.stats()
    assert stats["backends"][1]["failures"] > 0
    assert_no_leaks(lb)


def test_failing_health_leaves_rotation_in_time(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """A backend switched to fail /health leaves within interval*fall+timeout
    and then gets no requests; switched back, it returns."""
    backends = [demo_backend("web1"), demo_backend("web2")]
    lb = balancer(
        [(b.name, b.port) for b in backends],
        health="interval = 500ms\ntimeout = 200ms\nfall = 2\nrise = 2",
    )
    switched = time.time()
    backends[0].control("health", "fail")
    wait_until(lambda: not lb.stats()["backends"][0]["healthy"], 5)
    left = lb.stats()["backends"][0]["history"][-1]
    assert left["reason"] == "2/2 probes bad: probe answered 503", left
    # interval * fall + timeout, plus 0.1s for the switch's own round trip
    # and the reactor's scheduling on a busy machine.
    assert left["time"] - switched <= 0.5 * 2 + 0.2 + 0.1, left["time"] - switched
    before = backends[0].stats()["requests"]
    for _ in range(20):
        assert get(lb, "/").status == 200
    assert backends[0].stats()["requests"] == before
    backends[0].control("health", "ok")
    wait_until(lambda: lb.stats()["backends"][0]["healthy"], 5)
    assert_no_leaks(lb)


def test_fast_failing_backend_is_ejected(
    demo_backend: Callable[..., Backend],
    balancer: Callable[..., Balancer],
    processes: Processes,
) -> None:
    """A backend that answers 500 within a millisecond would attract most
    traffic under least connections; once ejected it gets under 5%."""
    good = [demo_backend(f"web{i}", delay="5ms") for i in range(2)]
    bad = demo_backend("bad0")
    bad.control("error-rate", "1")
    lb = balancer([(b.name, b.port) for b in [*good, bad]])
    out = run_tool(["ab", "-n", "4000", "-c", "20", f"{lb.url}/"])
    assert re.search(r"Complete requests:\s+4000", out), out
    served_by_bad = bad.stats()["requests"]
    assert served_by_bad < 4000 * 0.05, served_by_bad
    state = lb.stats()["backends"][2]
    assert state["state"] == "ejected", state
    assert "consecutive failures (last: answered 500)" in state["history"][-1]["reason"]
    assert_no_leaks(lb)


class _Garbage:
    """A backend on a loopback port that answers every request with C{answer}."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(self.answer)
                except OSError:
                    pass


def test_probe_reason_in_words(balancer: Callable[..., Balancer]) -> None:
    """
    A backend whose health answer is not HTTP leaves rotation with its
    reason in words in /api/server-stats: what Twisted could not parse,
    the backend's bytes escaped, not a Failure's repr.
    """
    garbage = _Garbage(b"HTTP/1.1 2\x1b[31m00 \xffOK\r\n\r\n")
    try:
        lb = balancer(
            [("garbage", garbage.port)],
            health="interval = 500ms\ntimeout = 200ms\nfall = 1\nrise = 1",
        )
        wait_until(lambda: not lb.stats()["backends"][0]["healthy"], 5)
        left = lb.stats()["backends"][0]["history"][-1]
        assert left["reason"] == (
            "1/1 probes bad: probe failed: invalid HTTP response: non-integer"
            " status code: 'HTTP/1.1 2\\x1b[31m00 \\xffOK'"
        ), left
    finally:
        garbage.listener.close()
