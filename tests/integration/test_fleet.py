"""
Readiness and the fleet with real processes on loopback: ``twistd -n txlb``
nodes, demo backends and Debian's ``redis-server``.

  - ``GET /healthz`` through a SIGTERM drain: 503 at once on the stats port,
    which stays open while a long request keeps the drain going, the proxy
    port open for ``shutdown_grace`` and then closed; without
    ``stats_listen`` the check fails by a refused connection instead.
  - Two nodes over one Redis: one node's requests in flight are the other's
    ``peers``, and an ejection by one is honoured by the other.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Backend, Processes, free_port
from tests.integration.fleet_support import (
    get,
    get_json,
    needs_redis,
    redis_argv,
    refused,
    twistd_argv,
    wait_until,
)


class Node:
    def __init__(
        self, processes: Processes, directory: Path, name: str, ini: str
    ) -> None:
        self.name = name
        self.port = free_port()
        self.stats_port = free_port()
        path = directory / f"{name}.ini"
        text = ini.format(port=self.port, stats=self.stats_port)
        path.write_text(text)
        self.log = directory / f"{name}.log"
        self.proc = processes.start(name, twistd_argv(path), self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.stats_url = (
            f"http://127.0.0.1:{self.stats_port}"
            if "stats_listen" in text
            else self.url
        )

    def stats(self) -> dict:  # type: ignore[type-arg]
        return get_json(self.stats_url + "/api/server-stats")  # type: ignore[no-any-return]

    def healthz(self) -> tuple[int, bytes]:
        return get(self.stats_url + "/healthz")


def ini(backends: list[Backend], extra: str = "", stats: bool = True) -> str:
    text = "[txlb]\nlisten = tcp:{port}:interface=127.0.0.1\n"
    if stats:
        text += "stats_listen = tcp:{stats}:interface=127.0.0.1\n"
    text += extra.replace("{", "{{").replace("}", "}}") + "\n"
    for b in backends:
        text += f"[backend:{b.name}]\naddress = 127.0.0.1:{b.port}\n"
    return text


def in_background(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def test_healthz_through_a_sigterm_drain(
    processes: Processes, tmp_path: Path, demo_backend: Callable[..., Backend]
) -> None:
    """
    SIGTERM with stats_listen and shutdown_grace: /healthz says 503 at once;
    the proxy port still serves for the grace, then refuses; the stats port
    answers 503 all through the drain, which a 3 s request keeps going; that
    request is answered and twistd exits 0.
    """
    backend = demo_backend("web1")
    node = Node(
        processes,
        tmp_path,
        "lb",
        ini([backend], "shutdown_grace = 1s\nshutdown_timeout = 10s"),
    )
    assert node.healthz() == (200, b"ready: 1 of 1 backends available\n")
    long, answered = in_background(lambda: get(node.url + "/_demo/sleep?ms=3000"))
    wait_until(lambda: node.stats()["totals"]["active_connections"] == 1)
    node.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert wait_until(lambda: node.healthz()[0] == 503, timeout=1)
    assert node.healthz() == (503, b"draining: shutting down\n")
    # The grace: new requests are still proxied, while the check says no.
    assert get(node.url + "/_demo/sleep?ms=10")[0] == 200
    assert time.monotonic() - started < 1
    wait_until(lambda: refused("127.0.0.1", node.port), timeout=3)
    assert time.monotonic() - started >= 1
    # The drain: the long request holds it; the stats port still answers.
    assert node.proc.poll() is None
    assert node.healthz() == (503, b"draining: shutting down\n")
    assert node.stats()["totals"]["active_connections"] == 1
    long.join(timeout=10)
    assert answered and answered[0][0] == 200  # type: ignore[index]
    assert node.proc.wait(timeout=10) == 0
    log = node.log.read_text()
    assert "not ready (/healthz says 503); listening for 1s more" in log
    assert "every connection is closed" in log


def test_healthz_on_the_proxy_port(
    processes: Processes, tmp_path: Path, demo_backend: Callable[..., Backend]
) -> None:
    """
    Without stats_listen /healthz is answered on the proxy's port, which
    SIGTERM closes first: a health check then fails by a refused connection
    (what an NLB or Kubernetes counts as a failed check) while a request in
    flight is still answered.
    """
    backend = demo_backend("web1")
    node = Node(processes, tmp_path, "lb", ini([backend], stats=False))
    assert node.healthz() == (200, b"ready: 1 of 1 backends available\n")
    long, answered = in_background(lambda: get(node.url + "/_demo/sleep?ms=1500"))
    wait_until(lambda: node.stats()["totals"]["active_connections"] == 1)
    node.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: refused("127.0.0.1", node.port), timeout=2)
    assert node.proc.poll() is None
    long.join(timeout=10)
    assert answered and answered[0][0] == 200  # type: ignore[index]
    assert node.proc.wait(timeout=10) == 0


def test_healthz_without_a_backend(
    processes: Processes, tmp_path: Path, demo_backend: Callable[..., Backend]
) -> None:
    """A balancer whose every backend fails its checks is not ready (503)."""
    backend = demo_backend("web1")
    node = Node(
        processes,
        tmp_path,
        "lb",
        ini([backend], "[health]\ninterval = 200ms\ntimeout = 100ms\nfall = 2"),
    )
    assert node.healthz()[0] == 200
    backend.control("health", "fail")
    wait_until(lambda: node.healthz()[0] == 503)
    assert node.healthz() == (503, b"not ready: no backend available (0 of 1)\n")
    backend.control("health", "ok")
    wait_until(lambda: node.healthz()[0] == 200)


@pytest.fixture
def redis_port(processes: Processes) -> int:
    needs_redis()
    port = free_port()
    processes.start("redis", redis_argv(port), port)
    return port


def fleet_ini(backends: list[Backend], redis: int, node: str, extra: str = "") -> str:
    return ini(
        backends,
        f"{extra}\n[fleet]\nredis = redis://127.0.0.1:{redis}/0\nnode = {node}\n"
        "interval = 100ms\n[outlier]\nconsecutive_failures = 3\n"
        "base_ejection_time = 30s\n",
    )


def test_two_nodes_share_load_and_ejections(
    processes: Processes,
    tmp_path: Path,
    demo_backend: Callable[..., Backend],
    redis_port: int,
) -> None:
    """
    Requests in flight through one node are the other's peers' load on the
    same backends (found by address though the names differ); a backend
    one node ejects is ejected by the other, saying by whom and why.
    """
    web = [demo_backend(f"web{i}") for i in (1, 2)]
    a = Node(processes, tmp_path, "lb-a", fleet_ini(web, redis_port, "lb-a"))
    renamed = [Backend(f"app{i}", b.port) for i, b in enumerate(web, 1)]
    b = Node(processes, tmp_path, "lb-b", fleet_ini(renamed, redis_port, "lb-b"))
    for node in (a, b):
        wait_until(lambda n=node: n.stats()["fleet"]["status"] == "sharing")
    threads = [
        in_background(lambda: get(a.url + "/_demo/sleep?ms=2000"))[0] for _ in range(4)
    ]

    def peers_of_b() -> list[int]:
        return [x["peers"] for x in b.stats()["fleet"]["backends"]]

    assert wait_until(lambda: sum(peers_of_b()) == 4)
    fleet = b.stats()["fleet"]
    (peer,) = [n for n in fleet["nodes"] if not n["self"]]
    assert (peer["node"], peer["load"]) == ("lb-a", 4)
    for t in threads:
        t.join(timeout=10)
    wait_until(lambda: sum(peers_of_b()) == 0)

    web[0].control("error-rate", "1")
    for _ in range(10):
        get(a.url + "/")
    wait_until(lambda: a.stats()["backends"][0]["state"] == "ejected")
    wait_until(lambda: b.stats()["backends"][0]["state"] == "ejected", timeout=2)
    reason = b.stats()["backends"][0]["history"][-1]["reason"]
    assert reason.startswith("ejected by peer lb-a: 3 consecutive failures"), reason
    assert b.stats()["fleet"]["backends"][0]["ejected_by"] == "lb-a"


def test_a_node_with_workers(
    processes: Processes,
    tmp_path: Path,
    demo_backend: Callable[..., Backend],
    redis_port: int,
) -> None:
    """
    A node with workers = 2 is one node: it publishes every worker's
    requests in flight, and its workers' picks count the peers' load: while
    the other node holds 3 slow requests on web1, each of its requests goes
    to web2, whichever worker takes it.
    """
    import http.client

    from tests.integration.test_workers import owners

    web = [demo_backend(f"web{i}") for i in (1, 2)]
    a = Node(
        processes,
        tmp_path,
        "lb-a",
        fleet_ini(web, redis_port, "lb-a", "workers = 2\nshutdown_timeout = 1s"),
    )
    b = Node(processes, tmp_path, "lb-b", fleet_ini(web[:1], redis_port, "lb-b"))
    for node in (a, b):
        wait_until(lambda n=node: n.stats()["fleet"]["status"] == "sharing")
    wait_until(lambda: all(w["serving"] for w in a.stats()["workers"]))
    # a's load, from both workers, is b's peers' load.
    threads = [
        in_background(lambda: get(a.url + "/_demo/sleep?ms=1500"))[0] for _ in range(4)
    ]

    def peers_of(node: Node) -> list[int]:
        return [x["peers"] for x in node.stats()["fleet"]["backends"]]

    assert wait_until(lambda: sum(peers_of(b)) == 2)  # b knows web1 only
    (peer,) = [n for n in b.stats()["fleet"]["nodes"] if not n["self"]]
    assert (peer["node"], peer["load"]) == ("lb-a", 4)
    for t in threads:
        t.join(timeout=10)
    wait_until(lambda: sum(peers_of(b)) == 0)
    # b's load on web1 reaches a's workers.
    held = [
        in_background(lambda: get(b.url + "/_demo/sleep?ms=3000"))[0] for _ in range(3)
    ]
    assert wait_until(lambda: peers_of(a) == [3, 0])
    # Open together, so the workers' accept balancing splits them.
    conns = [
        http.client.HTTPConnection("127.0.0.1", a.port, timeout=10) for _ in range(12)
    ]
    for conn in conns:
        conn.connect()
    time.sleep(0.2)
    mine = owners(a.port)
    pids = {mine.get(conn.sock.getsockname()[1]) for conn in conns}
    went = []
    for conn in conns:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        went.append(response.getheader("x-backend"))
        conn.close()
    assert went == ["web2"] * 12, went
    assert None not in pids and len(pids) == 2, pids
    for t in held:
        t.join(timeout=10)
