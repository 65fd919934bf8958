"""
C{workers = 2} with real processes: a real twistd supervising two workers in
front of real demo backends, under keep-alive load from client threads that
account for every request and know which worker serves their connection.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import TWISTD, Backend, Balancer, free_port
from tests.processes import spawn, stop_all


class Client(threading.Thread):
    """One keep-alive client connection, sending GETs until stopped."""

    def __init__(self, port: int, stop: threading.Event, path: str = "/") -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = stop
        self.path = path
        self.ok = 0
        self.failed: list[str] = []
        self.local_ports: list[int] = []

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.connect()
        self.local_ports.append(conn.sock.getsockname()[1])
        return conn

    def run(self) -> None:
        conn = self._connect()
        while not self.stop.is_set():
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"status {response.status}")
            except (OSError, http.client.HTTPException) as e:
                self.failed.append(f"{type(e).__name__}: {e}")
                conn.close()
                time.sleep(0.05)
                conn = self._connect()
        conn.close()


class Load:
    """Many clients at once, started and stopped together."""

    def __init__(self, port: int, clients: int, path: str = "/") -> None:
        self.stop = threading.Event()
        self.clients = [Client(port, self.stop, path) for _ in range(clients)]

    def __enter__(self) -> Load:
        for client in self.clients:
            client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for client in self.clients:
            client.join(timeout=15)

    @property
    def ok(self) -> int:
        return sum(c.ok for c in self.clients)

    @property
    def failed(self) -> list[str]:
        return [f for c in self.clients for f in c.failed]


def stats(balancer: Balancer) -> dict[str, Any]:
    with urllib.request.urlopen(balancer.url + "/api/server-stats", timeout=5) as r:
        return json.load(r)  # type: ignore[no-any-return]


def wait_until(what: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def serving(balancer: Balancer, count: int = 2) -> None:
    """Wait until every worker is up and the balancer answers."""

    def up() -> bool:
        try:
            workers = stats(balancer)["workers"]
        except (OSError, ValueError):
            return False
        return len(workers) == count and all(w["serving"] for w in workers)

    wait_until(up)


def owners(port: int) -> dict[int, int]:
    """Client port -> pid of the process holding the accepted connection."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        peer = re.search(r"127\.0\.0\.1:(\d+)\s+users:", line)
        pid = re.search(r"pid=(\d+)", line)
        if peer and pid:
            found[int(peer.group(1))] = int(pid.group(1))
    return found


@pytest.fixture
def three(demo_backend: Callable[..., Backend]) -> list[Backend]:
    return [demo_backend(f"web{i}", delay="150ms") for i in range(3)]


def test_global_counts_and_even_spread(
    balancer: Callable[..., Balancer], demo_backend: Callable[..., Backend]
) -> None:
    """
    Two workers under 24 keep-alive clients: the connections split evenly;
    txlb's count of each backend's requests in flight is the backend's own
    (txlb's read between two reads of the backend's, each sample within
    their range); with equal weights the backends' totals are within 5%
    (counted over a second load of 50 ms requests: with 600 ms ones, the
    24 requests go in rounds of 8 a backend, and where the load stops in a
    round would alone be 8 of about 40).
    """
    backends = [demo_backend(f"web{i}", delay="600ms") for i in range(3)]
    lb = balancer([(b.name, b.port) for b in backends], "workers = 2")
    serving(lb)
    misses = []
    totals_seen = []
    samples = 0
    with Load(lb.port, 24) as load:
        time.sleep(1.5)
        for _ in range(10):
            for i, backend in enumerate(backends):
                before = backend.stats()
                seen = stats(lb)
                mine = seen["backends"][i]["active_connections"]
                after = backend.stats()
                low, high = sorted(
                    s["in_service"] + s["queued"] for s in (before, after)
                )
                samples += 1
                if not low <= mine <= high:
                    misses.append((low, mine, high))
                totals_seen.append(seen["totals"]["active_connections"])
            time.sleep(0.1)
        connections = [w["connections"] for w in stats(lb)["workers"]]
    assert load.failed == []
    # Each client has one request out at a time: the balancer's count is
    # the 24 clients' (a worker's own view would be about half of it).
    assert sum(22 <= n <= 24 for n in totals_seen) >= 0.8 * len(totals_seen), (
        totals_seen
    )
    # A request counts at txlb from its pick to its answer, at the backend
    # from its arrival: a sample may differ by what is on the wire.
    assert len(misses) <= samples // 5, misses
    assert all(low - 2 <= mine <= high + 2 for low, mine, high in misses), misses
    assert abs(connections[0] - connections[1]) <= 2, connections
    before = [b["total_requests"] for b in stats(lb)["backends"]]
    assert sum(before) >= load.ok
    for backend in backends:
        backend.control("delay", "50ms")
    with Load(lb.port, 24) as load:
        time.sleep(4)
    assert load.failed == []
    after = [b["total_requests"] for b in stats(lb)["backends"]]
    totals = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(totals) >= load.ok >= 1000, (totals, load.ok)
    assert max(totals) <= 1.05 * min(totals), totals
    assert all(b["active_connections"] == 0 for b in stats(lb)["backends"])


def test_short_connections_spread_beside_idle_keepalive_ones(
    balancer: Callable[..., Balancer], demo_backend: Callable[..., Backend]
) -> None:
    """
    A connection per request (ab, no keep-alive) splits evenly over two
    workers even when one worker holds many idle keep-alive connections
    (nginx keeps its upstream ones): idle connections are no load, so they
    do not send the new ones to the other worker (they did: 98% / 2% in
    bench scenario 14 after nginx's keep-alive cell).
    """
    backends = [demo_backend(f"web{i}") for i in range(3)]
    lb = balancer([(b.name, b.port) for b in backends], "workers = 2")
    serving(lb)
    workers = {w["pid"]: w["index"] for w in stats(lb)["workers"]}
    idle = []
    for _ in range(30):
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        conn.request("GET", "/")
        conn.getresponse().read()
        idle.append(conn)
    held = owners(lb.port)
    mine = [c for c in idle if workers.get(held[c.sock.getsockname()[1]]) == 0]
    theirs = [c for c in idle if c not in mine]
    # Keep 12 on worker 0 and none on worker 1 (whichever got more).
    heavy, light = (mine, theirs) if len(mine) >= len(theirs) else (theirs, mine)
    assert len(heavy) >= 12, (len(mine), len(theirs))
    for conn in light + heavy[12:]:
        conn.close()
    time.sleep(1.5)  # the workers' next heartbeat: their counts now
    before = {w["index"]: w["responses"] for w in stats(lb)["workers"]}
    out = subprocess.run(
        ["ab", "-q", "-c", "20", "-n", "2000", f"{lb.url}/"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert re.search(r"Complete requests:\s+2000", out), out
    assert re.search(r"Failed requests:\s+0", out), out

    def served() -> dict[int, int]:
        now = {w["index"]: w["responses"] for w in stats(lb)["workers"]}
        return {i: now[i] - before[i] for i in before}

    wait_until(lambda: sum(served().values()) >= 2000)
    done = served()
    shares = [n / sum(done.values()) for n in done.values()]
    assert all(0.35 <= share <= 0.65 for share in shares), done
    for conn in heavy[:12]:
        conn.close()


def test_killed_worker_restarted(
    balancer: Callable[..., Balancer], three: list[Backend]
) -> None:
    """
    kill -9 of one worker under load: it is restarted within a second, the
    global counts come back to the true in-flight, and only the killed
    worker's connections see a failure.
    """
    lb = balancer([(b.name, b.port) for b in three], "workers = 2")
    serving(lb)
    with Load(lb.port, 16) as load:
        time.sleep(1.5)
        held = owners(lb.port)
        workers = stats(lb)["workers"]
        victim = workers[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        def restarted() -> bool:
            w = stats(lb)["workers"][0]
            return w["alive"] and w["pid"] != victim

        wait_until(restarted, timeout=5)
        took = time.monotonic() - killed_at
        time.sleep(1.5)
    assert took < 1.5, took  # within 1 s, and the look itself
    victims = {port for port, pid in held.items() if pid == victim}
    assert victims, held
    for client in load.clients:
        if client.local_ports[0] not in victims:
            assert client.failed == [], client.failed
    assert len([c for c in load.clients if c.failed]) <= len(victims)
    assert load.ok > 100
    wait_until(lambda: all(b["active_connections"] == 0 for b in stats(lb)["backends"]))
    assert all(b.stats()["in_service"] == 0 for b in three)
    assert stats(lb)["workers"][0]["restarts"] == 1


def test_max_connections_across_workers(
    balancer: Callable[..., Balancer], demo_backend: Callable[..., Backend]
) -> None:
    """max_connections = 2 holds with 20 clients spread over two workers."""
    web = demo_backend("web", delay="50ms")
    lb = balancer(
        [(web.name, web.port)],
        "workers = 2\nqueue_timeout = 10s",
    )
    serving(lb)
    ini = lb.log.parent / "lb.ini"
    ini.write_text(ini.read_text() + "max_connections = 2\n")
    lb.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: stats(lb)["backends"][0]["max_connections"] == 2)
    with Load(lb.port, 20) as load:
        time.sleep(3)
        connections = [w["connections"] for w in stats(lb)["workers"]]
    assert load.failed == []
    assert load.ok > 50
    assert min(connections) >= 5, connections
    assert web.stats()["peak_in_flight"] <= 2


@pytest.fixture
def held_socket() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    yield sock
    sock.close()


def test_socket_activation_reload_and_sigterm(
    three: list[Backend], held_socket: socket.socket, tmp_path: Path
) -> None:
    """
    With systemd's socket (LISTEN_FDS, fd 3) and two workers: a reload under
    load (a backend removed, one re-weighted) and then a SIGTERM with
    requests in flight lose nothing; a new txlb on the same socket serves.
    """
    ini = tmp_path / "lb.ini"
    stats_port = free_port()
    lines = [
        "[txlb]",
        "listen = systemd:domain=INET:index=0",
        f"stats_listen = tcp:{stats_port}:interface=127.0.0.1",
        "workers = 2",
        "shutdown_timeout = 10s",
    ]
    for b in three:
        lines += [f"[backend:{b.name}]", f"address = 127.0.0.1:{b.port}"]
    ini.write_text("\n".join(lines) + "\n")
    port = held_socket.getsockname()[1]
    fd = held_socket.fileno()
    procs: list[subprocess.Popen[bytes]] = []

    def activate() -> subprocess.Popen[bytes]:
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

    lb = Balancer(activate(), stats_port, tmp_path / "txlb-0.log")
    web0, _, web2 = three
    try:
        serving(lb)
        with Load(port, 8) as load:
            time.sleep(1)
            text = ini.read_text()
            text = text.replace(
                f"[backend:web0]\naddress = 127.0.0.1:{web0.port}\n", ""
            )
            text = text.replace(
                f"address = 127.0.0.1:{web2.port}",
                f"address = 127.0.0.1:{web2.port}\nweight = 3",
            )
            ini.write_text(text)
            lb.proc.send_signal(signal.SIGHUP)

            def reloaded() -> bool:
                backends = stats(lb)["backends"]
                return [(b["name"], b["configured_weight"]) for b in backends] == [
                    ("web1", 1.0),
                    ("web2", 3.0),
                ]

            wait_until(reloaded)
            time.sleep(1)
        assert load.failed == []
        assert load.ok > 50
        # Requests in flight when SIGTERM comes are answered (150 ms each).
        answers: list[int] = []
        threads = [
            threading.Thread(target=lambda: answers.append(_get(port)))
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.05)
        lb.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=15)
        assert answers == [200] * 6
        assert lb.proc.wait(timeout=20) == 0
        activate()
        wait_until(lambda: _get(port) == 200)
    finally:
        stop_all(procs)
    log = (tmp_path / "txlb-0.log").read_text()
    assert "supervising 2 workers" in log
    assert "Traceback" not in log


def _get(port: int) -> int:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/")
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return 0


def test_admin_and_rejected_reload_reach_every_worker(
    balancer: Callable[..., Balancer], three: list[Backend], tmp_path: Path
) -> None:
    """
    The admin API acts on the balancer: a backend drained through it gets
    no more requests from either worker.  An invalid lb.ini is rejected once,
    by the supervisor, and every worker keeps serving the old one.
    """
    token = "workers-admin-token-0123456789abcdef"
    token_file = tmp_path / "token"
    token_file.write_text(token)
    lb = balancer(
        [(b.name, b.port) for b in three],
        f"workers = 2\nadmin_token_file = {token_file}",
    )
    serving(lb)
    drain = urllib.request.Request(
        lb.url + "/api/backends/web0/drain",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(drain, timeout=5) as r:
        assert json.load(r)["state"] == "draining"
    wait_until(lambda: stats(lb)["backends"][0]["active_connections"] == 0)
    before = three[0].stats()["requests"]
    ini = lb.log.parent / "lb.ini"
    good = ini.read_text()
    ini.write_text(good + "[txlb]\nworkers = many\n")
    lb.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload rejected" in lb.log.read_text())
    with Load(lb.port, 8) as load:
        time.sleep(2)
    assert load.failed == []
    assert load.ok > 50
    assert three[0].stats()["requests"] == before
    assert three[1].stats()["requests"] > 0 and three[2].stats()["requests"] > 0
    assert lb.log.read_text().count("reload rejected") == 1


def test_tcp_mode_with_workers(
    balancer: Callable[..., Balancer], processes: Any
) -> None:
    """TCP mode with two workers relays every connection and counts it."""
    import sys

    ports = [free_port() for _ in range(2)]
    argv = [sys.executable, "-m", "backends", "--tcp-echo"]
    for port in ports:
        argv += ["--port", str(port)]
    processes.start("echo", argv, ports[-1])
    stats_port = free_port()
    lb = balancer(
        [(f"echo{i}", p) for i, p in enumerate(ports)],
        f"mode = tcp\nworkers = 2\nstats_listen = tcp:{stats_port}:interface=127.0.0.1",
        health="path =",
    )
    stats_url = f"http://127.0.0.1:{stats_port}/api/server-stats"

    def tcp_stats() -> dict[str, Any]:
        with urllib.request.urlopen(stats_url, timeout=5) as r:
            return json.load(r)  # type: ignore[no-any-return]

    wait_until(lambda: all(w["serving"] for w in tcp_stats()["workers"]))
    sockets = []
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
        s.sendall(b"ping %d\n" % i)
        assert s.recv(64) == b"ping %d\n" % i
        sockets.append(s)
    seen = tcp_stats()
    assert seen["totals"]["active_connections"] == 10
    # Each worker relays its share (its column of the shared counts).
    assert min(w["in_flight"] for w in seen["workers"]) >= 3, seen["workers"]
    for s in sockets:
        s.close()
    wait_until(lambda: tcp_stats()["totals"]["active_connections"] == 0)
