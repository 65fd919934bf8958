"""
End to end, TCP mode: the real ``twistd -n txlb`` with ``mode = tcp`` in
front of real TCP echo servers (``python -m backends --tcp-echo``), driven
by plain sockets.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import TWISTD, Processes, free_port

GIB = 1 << 30


class TCPBalancer:
    def __init__(self, pid: int, port: int, stats_port: int) -> None:
        self.pid = pid
        self.port = port
        self.stats_port = stats_port

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.stats_port}/api/server-stats"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)  # type: ignore[no-any-return]

    def by_name(self, key: str) -> dict[str, Any]:
        return {b["name"]: b[key] for b in self.stats()["backends"]}

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def peak_memory_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def wait_idle(self) -> None:
        """Wait until no connection is counted active (closes are async)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            active = self.by_name("active_connections")
            if not any(active.values()):
                return
            time.sleep(0.05)
        raise AssertionError(f"connections still counted: {active}")


@pytest.fixture
def echo(processes: Processes) -> Callable[[], int]:
    """Starts a TCP echo server; returns its port."""

    def start() -> int:
        port = free_port()
        argv = [sys.executable, "-m", "backends", "--tcp-echo", "--port", str(port)]
        processes.start(f"echo-{port}", argv, port)
        return port

    return start


@pytest.fixture
def tcp_balancer(processes: Processes, tmp_path: Path) -> Callable[..., TCPBalancer]:
    def start(
        backends: list[tuple[str, int]], extra: str = "", backend_extra: str = ""
    ) -> TCPBalancer:
        port, stats_port = free_port(), free_port()
        text = (
            f"[txlb]\nmode = tcp\nlisten = tcp:{port}:interface=127.0.0.1\n"
            f"stats_listen = tcp:{stats_port}:interface=127.0.0.1\n{extra}\n"
            # No HTTP path: the health checks are TCP connects.
            "[health]\npath =\ninterval = 30s\ntimeout = 1s\n"
        )
        for name, backend_port in backends:
            text += f"[backend:{name}]\naddress = 127.0.0.1:{backend_port}\n"
            text += backend_extra + "\n"
        ini = tmp_path / "tcp.ini"
        ini.write_text(text)
        argv = [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(ini)]
        proc = processes.start("txlb-tcp", argv, stats_port)
        return TCPBalancer(proc.pid, port, stats_port)

    return start


def roundtrip(sock: socket.socket, message: bytes) -> bytes:
    sock.sendall(message)
    received = b""
    while len(received) < len(message):
        piece = sock.recv(65536)
        assert piece, "closed early"
        received += piece
    return received


@pytest.fixture
def three(
    echo: Callable[[], int], tcp_balancer: Callable[..., TCPBalancer]
) -> Iterator[TCPBalancer]:
    yield tcp_balancer([(f"echo{i}", echo()) for i in range(3)])


def test_concurrent_connections_spread(three: TCPBalancer) -> None:
    """200 connections held open at once are spread by least connections
    (67/67/66), each echoes, and each counts until it closes."""
    lb = three
    socks = [lb.connect() for _ in range(200)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"hello %d\n" % i)
        for i, sock in enumerate(socks):
            expected = b"hello %d\n" % i
            received = b""
            while len(received) < len(expected):
                piece = sock.recv(100)
                assert piece
                received += piece
            assert received == expected
        active = lb.by_name("active_connections")
        assert sum(active.values()) == 200, active
        assert sorted(active.values()) == [66, 67, 67], active
        assert sum(lb.by_name("total_requests").values()) == 200
        for sock in socks[:100]:
            sock.close()
        deadline = time.monotonic() + 10
        while sum(lb.by_name("active_connections").values()) > 100:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # New connections go where the closes left room.
        before = lb.by_name("active_connections")
        socks[:100] = [lb.connect() for _ in range(100)]
        for sock in socks[:100]:
            assert roundtrip(sock, b"again") == b"again"
        after = lb.by_name("active_connections")
        assert sorted(after.values()) == [66, 67, 67], (before, after)
    finally:
        for sock in socks:
            sock.close()
    lb.wait_idle()


def test_gib_stream_bounded_memory(
    echo: Callable[[], int], tcp_balancer: Callable[..., TCPBalancer]
) -> None:
    """1 GiB sent and echoed back through the relay at once comes back with
    the same SHA-256, the half-close passes through (the client's shutdown
    ends the echo), and the balancer's peak memory stays far below it."""
    lb = tcp_balancer([("echo", echo())])
    baseline = lb.peak_memory_mib()
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB
    sent = hashlib.sha256()
    sock = lb.connect(timeout=60)

    def send() -> None:
        for i in range(GIB // len(block)):
            chunk = i.to_bytes(8, "big") + block[8:]
            sent.update(chunk)
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)

    start = time.monotonic()
    sender = threading.Thread(target=send)
    sender.start()
    received, length = hashlib.sha256(), 0
    while piece := sock.recv(1 << 20):
        received.update(piece)
        length += len(piece)
    elapsed = time.monotonic() - start
    sender.join()
    sock.close()
    assert length == GIB
    assert received.hexdigest() == sent.hexdigest()
    peak = lb.peak_memory_mib()
    print(
        f"\n1 GiB each way through the TCP relay in {elapsed:.2f}s:"
        f" {2 * GIB / elapsed / 1e9:.2f} GB/s relayed;"
        f" peak RSS {peak:.0f} MiB (baseline {baseline:.0f} MiB)"
    )
    assert peak - baseline < 64, (baseline, peak)
    lb.wait_idle()


def test_slow_reader_stalls_sender(
    echo: Callable[[], int], tcp_balancer: Callable[..., TCPBalancer]
) -> None:
    """A client that sends but does not read is stopped by back-pressure
    through the relay and the echo (its sends stall after a few MiB of
    buffers), the balancer holds little of it, and every byte comes back
    once it reads."""
    lb = tcp_balancer([("echo", echo())])
    baseline = lb.peak_memory_mib()
    sock = lb.connect()
    sock.setblocking(False)
    block = b"x" * (1 << 16)
    sent, stalled_since = 0, None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            sent += sock.send(block)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 1:
                break
            time.sleep(0.01)
    assert stalled_since is not None, f"never stalled after {sent} bytes"
    assert sent < 256 << 20, sent
    peak = lb.peak_memory_mib()
    assert peak - baseline < 32, (baseline, peak)
    sock.setblocking(True)
    sock.settimeout(30)
    sock.shutdown(socket.SHUT_WR)
    received = 0
    while piece := sock.recv(1 << 20):
        assert piece == b"x" * len(piece)
        received += len(piece)
    sock.close()
    assert received == sent
    print(f"\nslow reader: sends stalled after {sent / (1 << 20):.1f} MiB")
    lb.wait_idle()


def test_refusing_backend_skipped(
    echo: Callable[[], int], tcp_balancer: Callable[..., TCPBalancer]
) -> None:
    """A backend that refuses connections is skipped for the next one: every
    client connection still works, and the refusals are counted."""
    dead = free_port()  # nobody listens there
    lb = tcp_balancer([("dead", dead), ("echo1", echo()), ("echo2", echo())])
    for i in range(30):
        with lb.connect() as sock:
            assert roundtrip(sock, b"message %d" % i) == b"message %d" % i
    failures = lb.by_name("failures")
    assert failures["dead"] >= 1, failures
    assert failures["echo1"] == failures["echo2"] == 0, failures
    lb.wait_idle()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol(
    version: str, echo: Callable[[], int], tcp_balancer: Callable[..., TCPBalancer]
) -> None:
    """A backend with proxy_protocol gets the header first, naming the
    client's address and port and the balancer's (the echo sends it back)."""
    lb = tcp_balancer([("echo", echo())], backend_extra=f"proxy_protocol = {version}")
    with lb.connect() as sock:
        client_port = sock.getsockname()[1]
        if version == "v1":
            header = b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (
                client_port,
                lb.port,
            )
        else:
            header = (
                b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
                + socket.inet_aton("127.0.0.1") * 2
                + client_port.to_bytes(2, "big")
                + lb.port.to_bytes(2, "big")
            )
        sock.sendall(b"payload")
        expected = header + b"payload"
        received = b""
        while len(received) < len(expected):
            piece = sock.recv(1000)
            assert piece
            received += piece
        assert received == expected


def test_idle_timeout(
    echo: Callable[[], int], tcp_balancer: Callable[..., TCPBalancer]
) -> None:
    """A connection idle for idle_timeout is closed and stops counting."""
    lb = tcp_balancer([("echo", echo())], extra="idle_timeout = 500ms")
    with lb.connect() as sock:
        assert roundtrip(sock, b"hi") == b"hi"
        start = time.monotonic()
        assert sock.recv(10) == b""
        assert 0.4 < time.monotonic() - start < 5
    lb.wait_idle()


class Resetter:
    """A backend that reads a request, then resets the connection (RST)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.resets = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    if not conn.recv(100):
                        continue  # a health check's connect
                except OSError:
                    continue
                linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.resets += 1

    def close(self) -> None:
        self.server.close()


def test_backend_reset_ejects(
    echo: Callable[[], int], tcp_balancer: Callable[..., TCPBalancer]
) -> None:
    """A backend that resets connections mid-stream is ejected after
    consecutive_failures of them (HAProxy's observe layer4): each of its
    clients is closed, and the next clients all go to the good backend."""
    resetter = Resetter()
    try:
        lb = tcp_balancer(
            [("echo", echo()), ("resetter", resetter.port)],
            extra="[outlier]\nconsecutive_failures = 3",
        )
        outcomes = []
        for _ in range(8):
            with lb.connect() as sock:
                sock.sendall(b"hello")
                try:
                    outcomes.append(sock.recv(100))
                except ConnectionResetError:
                    outcomes.append(b"reset")
        assert resetter.resets == 3
        assert outcomes.count(b"hello") == 5
        lb.wait_idle()
        assert lb.by_name("failures") == {"echo": 0, "resetter": 3}
        assert lb.by_name("state") == {"echo": "healthy", "resetter": "ejected"}
        for _ in range(5):
            with lb.connect() as sock:
                assert roundtrip(sock, b"again") == b"again"
        assert resetter.resets == 3
    finally:
        resetter.close()
