"""
nginx in front of txlb, as deployed: Debian's nginx runs ``nginx/txlb.conf``
(only its ports and paths changed) with a self-signed certificate made here,
in front of the real ``twistd -n txlb`` and demo backends.

The helpers here (certificate, site and main configuration) are shared with
the multi-host rehearsal in ``test_netns.py``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import TWISTD, Backend, Processes, free_port
from tests.integration.test_websocket import GUID, WebSocket

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "nginx" / "txlb.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

# --- shared helpers -------------------------------------------------------------


def make_certificate(directory: Path, names: list[str], ips: list[str]) -> Path:
    """
    A self-signed P-256 certificate and key, ``txlb.crt`` and ``txlb.key``
    in C{directory}, for the given DNS names and IP addresses.
    """
    directory.mkdir(parents=True, exist_ok=True)
    san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{a}" for a in ips])
    subprocess.run(
        [
            *(OPENSSL, "req", "-x509", "-newkey", "ec", "-nodes", "-days", "2"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}"),
            *("-keyout", str(directory / "txlb.key")),
            *("-out", str(directory / "txlb.crt")),
        ],
        check=True,
        capture_output=True,
    )
    return directory


def replace_once(text: str, old: str, new: str, count: int = 1) -> str:
    """Replace C{old}, which must occur exactly C{count} times."""
    assert text.count(old) == count, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def site_config(
    *,
    tls_dir: Path,
    web_root: Path,
    http: str = "80",
    https: str = "443",
    txlb_port: int = 8080,
) -> str:
    """
    The shipped ``nginx/txlb.conf`` with only its listen addresses, upstream
    port and file paths changed.  Every replaced string must be found, so
    the test fails (rather than tests something else) if the file changes.
    """
    text = SITE.read_text()
    text = replace_once(text, "    listen [::]:80 default_server;\n", "")
    text = replace_once(text, "    listen [::]:443 ssl http2 default_server;\n", "")
    text = replace_once(
        text, "listen 80 default_server;", f"listen {http} default_server;"
    )
    text = replace_once(
        text, "listen 443 ssl http2 default_server;", f"listen {https} ssl http2;"
    )
    text = replace_once(
        text, "server 127.0.0.1:8080;", f"server 127.0.0.1:{txlb_port};"
    )
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
    text = replace_once(text, "alias /usr/share/txlb/web/;", f"alias {web_root}/;")
    return text


def main_config(prefix: Path, site: Path) -> str:
    """
    A minimal nginx.conf (Debian's, less what needs /var) that includes the
    site; its access log records which upstream answered each request.
    """
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    gzip on;
    log_format upstream '$request_method $request_uri $status upstream=$upstream_addr';
    access_log {prefix}/access.log upstream;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {site};
}}
"""


def nginx_argv(prefix: Path) -> list[str]:
    """The command line that runs nginx in the foreground from C{prefix}."""
    return [
        NGINX,
        "-e",
        str(prefix / "error.log"),
        "-p",
        str(prefix),
        "-c",
        str(prefix / "nginx.conf"),
        "-g",
        "daemon off;",
    ]


def write_nginx(prefix: Path, site_text: str) -> list[str]:
    """Write the site and main configuration; check it with ``nginx -t``."""
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "txlb-site.conf"
    site.write_text(site_text)
    (prefix / "nginx.conf").write_text(main_config(prefix, site))
    argv = nginx_argv(prefix)
    check = subprocess.run([*argv[:-2], "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return argv


def installed_web_root() -> Path:
    """The dashboard files of the installed txlb (not the source tree)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import txlb.observe.assets as w; print(w.find_web_root())",
        ],
        capture_output=True,
        text=True,
        cwd="/",
        check=True,
    )
    root = Path(out.stdout.strip())
    assert "site-packages" in root.parts, f"{root} is not an installed copy"
    return root


# --- the stack under test ----------------------------------------------------------


class Stack:
    def __init__(self, directory: Path, processes: Processes) -> None:
        self.directory = directory
        self.processes = processes
        self.tls = make_certificate(directory / "tls", ["localhost"], ["127.0.0.1"])
        self.web_root = installed_web_root()
        self.backends = [self._backend(f"web{i}") for i in (1, 2)]
        self.txlb_port = free_port()
        self.ini = directory / "lb.ini"
        text = (
            f"[txlb]\nlisten = tcp:{self.txlb_port}:interface=127.0.0.1\n"
            "trusted_proxies = 127.0.0.1\n"
            # The WebSocket test leaves a tunnel open: SIGTERM need not wait.
            "shutdown_timeout = 1s\n"
            f"access_log = {directory / 'txlb-access.log'}\naccess_log_format = json\n"
            "[health]\ninterval = 500ms\ntimeout = 400ms\n"
        )
        for b in self.backends:
            text += f"[backend:{b.name}]\naddress = 127.0.0.1:{b.port}\n"
        self.ini.write_text(text)
        self.txlb = processes.start(
            "txlb",
            [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(self.ini)],
            self.txlb_port,
        )
        self.http_port = free_port()
        self.https_port = free_port()
        self.prefix = directory / "nginx"
        argv = write_nginx(
            self.prefix,
            site_config(
                tls_dir=self.tls,
                web_root=self.web_root,
                http=f"127.0.0.1:{self.http_port}",
                https=f"127.0.0.1:{self.https_port}",
                txlb_port=self.txlb_port,
            ),
        )
        processes.start("nginx", argv, self.https_port)
        self.context = ssl.create_default_context(cafile=str(self.tls / "txlb.crt"))

    def _backend(self, name: str) -> Backend:
        port = free_port()
        argv = [sys.executable, "-m", "backends", "--name", name, "--port", str(port)]
        self.processes.start(name, argv, port)
        return Backend(name, port)

    def https(self, timeout: float = 10) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "localhost", self.https_port, context=self.context, timeout=timeout
        )

    def get(self, path: str, **headers: str) -> tuple[http.client.HTTPResponse, bytes]:
        conn = self.https()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response, body

    def nginx_log(self) -> list[str]:
        return (self.prefix / "access.log").read_text().splitlines()

    def txlb_log(self) -> list[dict[str, object]]:
        path = self.directory / "txlb-access.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (os.access(NGINX, os.X_OK) and os.access(OPENSSL, os.X_OK)):
        pytest.skip("nginx and openssl are needed: run scripts/install-system-deps.sh")
    directory = tmp_path_factory.mktemp("nginx-stack")
    processes = Processes(directory)
    try:
        yield Stack(directory, processes)
    finally:
        processes.stop()


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# --- tests -----------------------------------------------------------------------


def test_https_reaches_backends(stack: Stack) -> None:
    """Requests over HTTPS reach every backend, with HSTS on each answer."""
    before = sum(b.stats()["requests"] for b in stack.backends)
    for i in range(6):
        response, body = stack.get(f"/page/{i}")
        assert response.status == 200, body
        assert response.getheader("Strict-Transport-Security") == "max-age=63072000"
    after = [b.stats()["requests"] for b in stack.backends]
    assert sum(after) - before == 6
    assert all(count > 0 for count in after), after


def test_forwarding_headers_from_nginx_believed(stack: Stack) -> None:
    """
    txlb trusts nginx (127.0.0.1): the backend sees the client nginx saw,
    scheme https and the Host the client asked for.
    """
    _, body = stack.get("/_demo/echo")
    headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert headers["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "localhost"
    assert headers["x-real-ip"] == "127.0.0.1"


def test_spoofed_forwarding_headers_not_trusted(stack: Stack) -> None:
    """
    What a client writes in X-Forwarded-For, X-Real-IP, Forwarded or
    X-Forwarded-Proto never reaches a backend or txlb's access log.
    """
    response, body = stack.get(
        "/_demo/echo?spoof=1",
        **{
            "X-Forwarded-For": "6.6.6.6, 7.7.7.7",
            "X-Real-IP": "6.6.6.6",
            "Forwarded": "for=6.6.6.6;proto=https",
            "X-Forwarded-Proto": "gopher",
            "X-Forwarded-Host": "evil.example",
        },
    )
    assert response.status == 200
    assert b"6.6.6.6" not in body and b"7.7.7.7" not in body, body
    assert b"gopher" not in body and b"evil.example" not in body, body
    headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert headers["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"
    assert "forwarded" not in headers
    wait_for(lambda: any("spoof=1" in str(r["uri"]) for r in stack.txlb_log()))
    (record,) = [r for r in stack.txlb_log() if "spoof=1" in str(r["uri"])]
    assert record["client"] == "127.0.0.1"


def test_http_redirects_to_https(stack: Stack) -> None:
    """Port 80's only answer is a permanent redirect to the same URL on https."""
    conn = http.client.HTTPConnection("localhost", stack.http_port, timeout=10)
    conn.request("POST", "/_demo/echo?a=1", body=b"x")
    response = conn.getresponse()
    response.read()
    assert response.status == 301
    assert response.getheader("Location") == "https://localhost/_demo/echo?a=1"


def test_tls_versions_and_ciphers(stack: Stack) -> None:
    """
    TLS 1.3 is chosen when offered, 1.2 works with a forward-secret AEAD
    suite, and 1.2 with only a static-RSA or CBC suite is refused.
    """

    def handshake(context: ssl.SSLContext) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", stack.https_port), timeout=5)
        return context.wrap_socket(raw, server_hostname="localhost")

    with handshake(stack.context) as tls:
        assert tls.version() == "TLSv1.3"
    only12 = ssl.create_default_context(cafile=str(stack.tls / "txlb.crt"))
    only12.maximum_version = ssl.TLSVersion.TLSv1_2
    with handshake(only12) as tls:
        assert tls.version() == "TLSv1.2"
        name, _, _ = tls.cipher()  # type: ignore[misc]
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA" in name)
    for weak in ("AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA"):
        context = ssl.create_default_context(cafile=str(stack.tls / "txlb.crt"))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(weak)
        with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|NO_SHARED_CIPHER"):
            handshake(context).close()


def test_tls11_refused(stack: Stack) -> None:
    """A TLS 1.1 handshake is refused by the server (a protocol-version alert)."""
    result = subprocess.run(
        [
            *(OPENSSL, "s_client", "-connect", f"127.0.0.1:{stack.https_port}"),
            *("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "localhost"),
        ],
        input=b"",
        capture_output=True,
        timeout=10,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode != 0
    # The alert comes from nginx: the client did send a TLS 1.1 hello.
    assert "alert protocol version" in output, output


def test_sse_through_nginx_within_a_second(stack: Stack) -> None:
    """
    /api/events streams through nginx unbuffered: the first event arrives
    within a second, and so does the next (a later tick, not the greeting).
    """
    conn = stack.https(timeout=5)
    started = time.monotonic()
    conn.request("GET", "/api/events", headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    arrivals = []
    while len(arrivals) < 2:
        line = response.fp.readline()
        assert line, "the stream ended"
        if line.startswith(b"event:"):
            arrivals.append(time.monotonic())
    conn.close()
    assert arrivals[0] - started < 1.0, arrivals[0] - started
    assert arrivals[1] - arrivals[0] < 1.0, arrivals[1] - arrivals[0]


def test_websocket_through_nginx(stack: Stack) -> None:
    """
    A WebSocket handshake through nginx's TLS reaches the backend's echo
    through txlb (101, the accept key) and frames flow both ways at once.
    """
    raw = socket.create_connection(("127.0.0.1", stack.https_port), timeout=10)
    tls = stack.context.wrap_socket(raw, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16))
    tls.sendall(
        b"GET /_demo/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" % key
    )
    ws = WebSocket.__new__(WebSocket)  # the client of test_websocket, over TLS
    ws.sock = tls
    ws.buffer = b""
    while b"\r\n\r\n" not in ws.buffer:
        ws.buffer += ws._recv()
    head, ws.buffer = ws.buffer.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in lines[1:])
    }
    try:
        assert lines[0].startswith(b"HTTP/1.1 101"), head
        assert headers[b"sec-websocket-accept"] == base64.b64encode(
            hashlib.sha1(key + GUID).digest()
        )
        for n in range(3):
            ws.send(0x1, b"hello %d" % n)
            assert ws.receive() == (0x1, b"hello %d" % n)
    finally:
        tls.close()


def test_dashboard_files_served_by_nginx(stack: Stack) -> None:
    """
    The dashboard's files come from nginx (its Server header, no upstream in
    its log) with the dashboard's security headers, and equal the installed
    files; txlb saw none of those requests.
    """
    from txlb.observe.webapp import CSP

    conn = http.client.HTTPSConnection(
        "localhost", stack.https_port, context=stack.context, timeout=10
    )
    conn.request("GET", "/dashboard")
    response = conn.getresponse()
    response.read()
    assert response.status == 301
    assert response.getheader("Location", "").endswith("/dashboard/")
    conn.close()
    names = ["", "index.html", "style.css", "app.js"]
    for name in names:
        response, body = stack.get(f"/dashboard/{name}?static=1")
        assert response.status == 200, name
        assert response.getheader("Server") == "nginx"
        assert body == (stack.web_root / (name or "index.html")).read_bytes()
        assert response.getheader("Content-Security-Policy") == CSP
        assert response.getheader("Strict-Transport-Security") == "max-age=63072000"
    wait_for(lambda: sum("static=1" in line for line in stack.nginx_log()) == 4)
    for line in stack.nginx_log():
        if "static=1" in line:
            assert line.endswith("upstream=-"), line
    # A proxied request does name its upstream, so the log above says something.
    stack.get("/_demo/echo?proxied=1")
    wait_for(lambda: any("proxied=1" in line for line in stack.nginx_log()))
    (proxied,) = [line for line in stack.nginx_log() if "proxied=1" in line]
    assert f"upstream=127.0.0.1:{stack.txlb_port}" in proxied
    assert not [r for r in stack.txlb_log() if "static=1" in str(r["uri"])]


def test_dashboard_files_served_without_txlb(stack: Stack) -> None:
    """
    With txlb stopped, proxied paths fail with 502 but the dashboard's files
    are still served: nginx needs nothing from txlb for them.  (Runs last:
    it stops txlb.)
    """
    stack.txlb.send_signal(signal.SIGTERM)
    stack.txlb.wait(timeout=10)
    response, _ = stack.get("/_demo/echo")
    assert response.status == 502
    response, body = stack.get("/dashboard/index.html")
    assert response.status == 200
    assert body == (stack.web_root / "index.html").read_bytes()
