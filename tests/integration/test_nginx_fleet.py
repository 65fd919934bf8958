"""
nginx/txlb-fleet.conf, the site on each balancer behind an AWS NLB, run by
Debian's nginx (only its ports, the VPC's network and file paths changed) in
front of a real ``twistd -n txlb`` with stats_listen, fed what an NLB sends:
a PROXY protocol v2 header on every connection, with the client's address
on client connections and none (LOCAL) on health checks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import TWISTD, Processes, free_port
from tests.integration.fleet_support import get, wait_until
from tests.integration.test_nginx import (
    NGINX,
    OPENSSL,
    installed_web_root,
    make_certificate,
    replace_once,
    write_nginx,
)

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "nginx" / "txlb-fleet.conf"
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
CLIENT = ("203.0.113.9", 41000)


def proxy_v2(client: tuple[str, int] | None, server: tuple[str, int]) -> bytes:
    """A PROXY protocol v2 header (TCP over IPv4), or LOCAL for None."""
    if client is None:
        return SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    addresses = socket.inet_aton(client[0]) + socket.inet_aton(server[0])
    addresses += struct.pack("!HH", client[1], server[1])
    return SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 12) + addresses


def fleet_site(
    *, tls_dir: Path, web_root: Path, ports: dict[str, int], txlb: int, stats: int
) -> str:
    """The shipped site with only ports, the trusted network and paths changed."""
    text = SITE.read_text()
    text = replace_once(
        text,
        "listen 80 proxy_protocol default_server;",
        f"listen 127.0.0.1:{ports['http']} proxy_protocol;",
    )
    text = replace_once(
        text,
        "listen 443 ssl http2 proxy_protocol default_server;",
        f"listen 127.0.0.1:{ports['https']} ssl http2 proxy_protocol;",
    )
    text = replace_once(
        text,
        "listen 8081 proxy_protocol;",
        f"listen 127.0.0.1:{ports['health']} proxy_protocol;",
    )
    # The NLB's nodes: here the test's own connections.
    text = replace_once(
        text, "set_real_ip_from 10.43.0.0/16;", "set_real_ip_from 127.0.0.1;", 2
    )
    text = replace_once(text, "server 127.0.0.1:8080;", f"server 127.0.0.1:{txlb};")
    text = replace_once(text, "server 127.0.0.1:9000;", f"server 127.0.0.1:{stats};")
    text = replace_once(
        text,
        "ssl_certificate     /etc/ssl/certs/txlb.crt;",
        f"ssl_certificate     {tls_dir / 'txlb.crt'};",
    )
    text = replace_once(
        text,
        "ssl_certificate_key /etc/ssl/private/txlb.key;",
        f"ssl_certificate_key {tls_dir / 'txlb.key'};",
    )
    return replace_once(text, "alias /usr/share/txlb/web/;", f"alias {web_root}/;")


class Stack:
    def __init__(self, directory: Path, processes: Processes) -> None:
        self.directory = directory
        self.tls = make_certificate(directory / "tls", ["localhost"], ["127.0.0.1"])
        backend = free_port()
        argv = [sys.executable, "-m", "backends", "--name", "web1"]
        processes.start("web1", [*argv, "--port", str(backend)], backend)
        self.txlb_port, self.stats_port = free_port(), free_port()
        ini = directory / "lb.ini"
        ini.write_text(
            f"[txlb]\nlisten = tcp:{self.txlb_port}:interface=127.0.0.1\n"
            f"stats_listen = tcp:{self.stats_port}:interface=127.0.0.1\n"
            "trusted_proxies = 127.0.0.1\nshutdown_grace = 1s\n"
            f"access_log = {directory / 'access.log'}\naccess_log_format = json\n"
            f"[backend:web1]\naddress = 127.0.0.1:{backend}\n"
        )
        self.txlb = processes.start(
            "txlb",
            [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(ini)],
            self.txlb_port,
        )
        self.ports = {name: free_port() for name in ("http", "https", "health")}
        argv = write_nginx(
            directory / "nginx",
            fleet_site(
                tls_dir=self.tls,
                web_root=installed_web_root(),
                ports=self.ports,
                txlb=self.txlb_port,
                stats=self.stats_port,
            ),
        )
        processes.start("nginx", argv, self.ports["https"])
        self.context = ssl.create_default_context(cafile=str(self.tls / "txlb.crt"))

    def exchange(
        self,
        port: str,
        request: bytes,
        client: tuple[str, int] | None = CLIENT,
        tls: bool = False,
        header: bool = True,
    ) -> bytes:
        """Send (a PROXY header and) one request; everything answered."""
        sock = socket.create_connection(("127.0.0.1", self.ports[port]), timeout=10)
        try:
            if header:
                sock.sendall(proxy_v2(client, ("127.0.0.1", self.ports[port])))
            if tls:
                sock = self.context.wrap_socket(sock, server_hostname="localhost")
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)
        except (ssl.SSLError, ConnectionResetError):
            return b""
        finally:
            sock.close()


def request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (os.access(NGINX, os.X_OK) and os.access(OPENSSL, os.X_OK)):
        pytest.skip("nginx and openssl are needed: run scripts/install-system-deps.sh")
    directory = tmp_path_factory.mktemp("nginx-fleet")
    processes = Processes(directory)
    try:
        yield Stack(directory, processes)
    finally:
        processes.stop()


def test_client_address_from_the_proxy_header(stack: Stack) -> None:
    """
    Over HTTPS behind a PROXY v2 header, the backend sees the header's
    client first in X-Forwarded-For, and txlb logs that client.
    """
    answer = stack.exchange("https", request("/_demo/echo?fleet=1"), tls=True)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    echoed = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    headers = {k.lower(): v for k, v in echoed["headers"]}
    assert headers["x-forwarded-for"] == f"{CLIENT[0]}, 127.0.0.1"
    assert headers["x-real-ip"] == CLIENT[0]
    records = wait_until(
        lambda: (
            [
                json.loads(line)
                for line in (stack.directory / "access.log").read_text().splitlines()
                if "fleet=1" in line
            ]
            if (stack.directory / "access.log").exists()
            else []
        ),
        timeout=5,
    )
    assert [r["client"] for r in records] == [CLIENT[0]]


def test_port_80_redirects(stack: Stack) -> None:
    """Port 80 (with its PROXY header) only redirects to HTTPS."""
    answer = stack.exchange("http", request("/x?y=1"))
    assert answer.startswith(b"HTTP/1.1 301"), answer[:200]
    assert b"Location: https://localhost/x?y=1\r\n" in answer


def test_stats_api_on_the_stats_port(stack: Stack) -> None:
    """/api/ and /metrics go to txlb's stats port, not to a backend."""
    answer = stack.exchange("https", request("/api/server-stats"), tls=True)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"backends"' in answer
    answer = stack.exchange("https", request("/metrics"), tls=True)
    assert b"txlb_backend_up" in answer


def test_no_proxy_header_refused(stack: Stack) -> None:
    """A connection without a PROXY header gets no answer on any port."""
    for port, tls in (("https", False), ("http", False), ("health", False)):
        answer = stack.exchange(port, request("/healthz"), header=False, tls=tls)
        assert not answer.startswith(b"HTTP/1.1 200"), (port, answer[:200])
        assert not answer.startswith(b"HTTP/1.1 301"), (port, answer[:200])


def test_health_check_port(stack: Stack) -> None:
    """
    Port 8081 answers the NLB's checks (PROXY v2 LOCAL) with txlb's
    /healthz and nothing else; after SIGTERM the same check says 503 while
    txlb drains (a 3 s request keeps it going), so the NLB takes the node
    out before the drain ends.
    """
    answer = stack.exchange("health", request("/healthz"), client=None)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert answer.endswith(b"ready: 1 of 1 backends available\n")
    assert stack.exchange(
        "health", request("/api/server-stats"), client=None
    ).startswith(b"HTTP/1.1 404")
    long: list[tuple[int, bytes]] = []
    thread = threading.Thread(
        target=lambda: long.append(
            get(f"http://127.0.0.1:{stack.txlb_port}/_demo/sleep?ms=3000")
        )
    )
    thread.start()
    time.sleep(0.3)
    stack.txlb.send_signal(signal.SIGTERM)
    checks = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        checks.append(stack.exchange("health", request("/healthz"), client=None))
        time.sleep(0.2)
    assert all(c.startswith(b"HTTP/1.1 503") for c in checks[1:]), checks
    assert checks[-1].endswith(b"draining: shutting down\n")
    thread.join(timeout=10)
    assert long and long[0][0] == 200
    assert stack.txlb.wait(timeout=10) == 0
