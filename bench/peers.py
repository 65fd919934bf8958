"""
The balancers under test, each started pinned to the balancer CPU with one
process / one worker / one thread, and the nginx and demo backends behind
them.  Every peer balances by least connections; the configuration of each
is written here, in one place, and copied into the results.

Passive checks (scenario 5), as configured for every scenario:
  - txlb: [outlier] defaults: 5 consecutive failures eject for 30 s.
  - nginx: C{max_fails=5 fail_timeout=30s} and C{proxy_next_upstream error
    timeout http_500} (without C{http_500} there nginx never counts a 500 as
    a failure; it also retries that request on another backend).
  - HAProxy: active C{check inter 2s fall 3 rise 2} plus C{observe layer7
    error-limit 5 on-error mark-down}.
  - Caddy: C{max_fails 5 fail_duration 30s unhealthy_status 5xx} plus an active
    C{health_uri /health} every 2 s.
  - aiohttp and stock Twisted: none (they have none).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from procs import Proc, Processes, StartError, free_ports, wait_http

__all__ = [
    "BALANCER_CPU",
    "HTTP_PEERS",
    "LOAD_CPU",
    "ROOT",
    "TCP_PEERS",
    "Context",
    "Target",
    "start_demo_backends",
    "start_nginx_backends",
    "start_peer",
]

BALANCER_CPU = 0
LOAD_CPU = 1  # load generator, backends, idle-connection client

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

HTTP_PEERS = ("nginx", "haproxy", "caddy", "aiohttp", "twisted-stock", "txlb")
TCP_PEERS = ("haproxy-tcp", "txlb-tcp")

LABELS = {
    "direct": "no balancer (straight to a backend)",
    "nginx": "nginx least_conn, upstream keepalive",
    "haproxy": "HAProxy leastconn, mode http",
    "caddy": "Caddy least_conn (GOMAXPROCS=1)",
    "aiohttp": "aiohttp reverse proxy (bench/aiohttp_proxy.py)",
    "twisted-stock": "stock twisted.web.proxy.ReverseProxyResource",
    "txlb": "txlb, mode http",
    "haproxy-tcp": "HAProxy leastconn, mode tcp",
    "txlb-tcp": "txlb, mode tcp",
    "txlb-1000": "txlb, 1000 backends",
    "txlb-3": "txlb, 3 backends",
    "haproxy-1000": "HAProxy leastconn, 1000 backends (reference)",
    "haproxy-3": "HAProxy leastconn, 3 backends (reference)",
    "nginx-1000": "nginx least_conn, 1000 backends (reference)",
    "nginx-3": "nginx least_conn, 3 backends (reference)",
    "txlb-hash": "txlb, algorithm = hash, hash_key = header:X-User",
    "haproxy-hash": "HAProxy balance hdr(X-User), hash-type consistent,"
    " hash-balance-factor 125",
    "nginx-hash": "nginx hash $http_x_user consistent",
}

SMALL_BODY = "0123456789abcdef"  # 16 bytes
ONE_MIB = 1 << 20


@dataclass
class Context:
    """What starting a peer needs: the run's processes, ports and paths."""

    procs: Processes
    workdir: Path
    python: str
    txlb_pythonpath: str | None  # None: the txlb installed in the venv
    # Other txlb trees run beside the first (--compare): (label, PYTHONPATH).
    txlb_compare: list[tuple[str, str]] = field(default_factory=list)
    taken_ports: set[int] = field(default_factory=set)
    start_timeout: float = 20.0

    def ports(self, count: int) -> list[int]:
        return free_ports(count, self.taken_ports)


@dataclass
class Target:
    """A running balancer (or none: C{direct}) and where to send load."""

    name: str
    url: str
    proc: Proc | None = None
    stats_url: str | None = None  # txlb's /api/server-stats
    config: str = ""
    extra: list[Proc] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


# Backends.


def start_nginx_backends(
    ctx: Context, ports: Sequence[int], tag: str = "backends"
) -> Proc:
    """One nginx worker on CPU 1 answering on every port in C{ports}:
    16 bytes on any path, 1 MiB on C{/1m}."""
    www = ctx.workdir / "www"
    www.mkdir(exist_ok=True)
    (www / "1m").write_bytes(bytes(range(256)) * (ONE_MIB // 256))
    listens = "\n".join(f"        listen 127.0.0.1:{p};" for p in ports)
    conf = f"""\
{_nginx_main(ctx, tag)}
http {{
    {_nginx_http_common(ctx, tag)}
    sendfile on;
    tcp_nopush on;
    server {{
{listens}
        root {www};
        location = /1m {{
            default_type application/octet-stream;
        }}
        location / {{
            default_type text/plain;
            return 200 "{SMALL_BODY}";
        }}
    }}
}}
"""
    proc = _start_nginx(ctx, tag, conf, cpu=1)
    wait_http(f"http://127.0.0.1:{ports[0]}/", proc, ctx.start_timeout, tag)
    wait_http(f"http://127.0.0.1:{ports[-1]}/", proc, ctx.start_timeout, tag)
    return proc


def start_demo_backends(
    ctx: Context,
    specs: Sequence[tuple[str, int, Sequence[str]]],
) -> list[Proc]:
    """Demo backends (C{python -m backends}), one process each, on CPU 1.
    C{specs}: (name, port, extra arguments such as --delay 5ms)."""
    env = {"PYTHONPATH": str(ROOT)}
    procs = []
    for name, port, extra in specs:
        argv = [ctx.python, "-m", "backends", "--name", name, "--port", str(port)]
        procs.append(
            ctx.procs.start(f"demo-{name}", [*argv, *extra], 1, env=env, cwd=ROOT)
        )
    for proc, (name, port, _) in zip(procs, specs, strict=True):
        wait_http(f"http://127.0.0.1:{port}/_demo/stats", proc, ctx.start_timeout, name)
    return procs


# Balancers.


def start_peer(
    ctx: Context,
    name: str,
    backends: Sequence[int],
    tag: str = "",
    txlb_health_interval: str = "2s",
    txlb_tree: str | None = None,
    txlb_sections: str | None = None,
    txlb_workers: int = 1,
    pinned: bool = True,
) -> Target:
    """
    Start balancer C{name} in front of the loopback ports C{backends}.

    @param txlb_sections: txlb's backend (or discovery) sections, in place
        of one per port of C{backends}.
    """
    tag = f"{name}{tag}"
    (port,) = ctx.ports(1)
    url = f"http://127.0.0.1:{port}"
    if name in ("nginx", "nginx-hash"):
        method = "hash $http_x_user consistent;" if name == "nginx-hash" else None
        conf = _nginx_balancer(ctx, tag, port, backends, method or "least_conn;")
        proc = _start_nginx(ctx, tag, conf, cpu=BALANCER_CPU)
        target = Target(name, url, proc, config=conf)
    elif name in ("haproxy", "haproxy-tcp", "haproxy-hash"):
        balance = "leastconn"
        if name == "haproxy-hash":
            balance = (
                "hdr(X-User)\n    hash-type consistent\n    hash-balance-factor 125"
            )
        conf = _haproxy(port, backends, tcp=name == "haproxy-tcp", balance=balance)
        path = ctx.workdir / f"{tag}.cfg"
        path.write_text(conf)
        proc = ctx.procs.start(tag, ["haproxy", "-db", "-f", str(path)], BALANCER_CPU)
        target = Target(name, url, proc, config=conf)
    elif name == "caddy":
        conf = _caddyfile(ctx, port, backends)
        path = ctx.workdir / "Caddyfile"
        path.write_text(conf)
        home = ctx.workdir / "caddy-home"
        home.mkdir(exist_ok=True)
        env = {
            "GOMAXPROCS": "1",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home),
            "XDG_DATA_HOME": str(home),
        }
        argv = ["caddy", "run", "--config", str(path), "--adapter", "caddyfile"]
        proc = ctx.procs.start(tag, argv, BALANCER_CPU, env=env)
        target = Target(name, url, proc, config=conf)
    elif name in ("aiohttp", "twisted-stock"):
        script = "aiohttp_proxy.py" if name == "aiohttp" else "twisted_stock_proxy.py"
        argv = [ctx.python, str(BENCH / script), "--port", str(port)]
        for b in backends:
            argv += ["--backend", f"127.0.0.1:{b}"]
        proc = ctx.procs.start(tag, argv, BALANCER_CPU)
        target = Target(name, url, proc, config=" ".join(argv[1:]))
    elif name.startswith("txlb"):
        (stats_port,) = ctx.ports(1)
        conf = _txlb_ini(
            port,
            stats_port,
            backends,
            tcp=name == "txlb-tcp",
            health_interval=txlb_health_interval,
            algorithm=_TXLB_ALGORITHMS.get(name, "least_conn"),
            sections=txlb_sections,
            workers=txlb_workers,
        )
        path = ctx.workdir / f"{tag}.ini"
        path.write_text(conf)
        twistd = str(Path(ctx.python).parent / "twistd")
        argv = [twistd, "-n", "--pidfile=", "txlb", "--config", str(path)]
        tree = txlb_tree or ctx.txlb_pythonpath
        env = {"PYTHONPATH": tree} if tree else {}
        cpu = BALANCER_CPU if pinned else None
        proc = ctx.procs.start(tag, argv, cpu, env=env, cwd=ctx.workdir)
        stats = f"http://127.0.0.1:{stats_port}/api/server-stats"
        target = Target(name, url, proc, stats_url=stats, config=conf)
    else:
        raise StartError(f"unknown peer {name!r}")
    try:
        wait_http(url + "/", target.proc, ctx.start_timeout, tag)
        if target.stats_url:
            wait_http(target.stats_url, target.proc, ctx.start_timeout, tag)
    except Exception:
        if target.proc is not None:
            ctx.procs.stop(target.proc)
        raise
    return target


def _nginx_main(ctx: Context, tag: str) -> str:
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""\
{user}
worker_processes 1;
daemon off;
master_process on;
pid {ctx.workdir}/{tag}.pid;
worker_rlimit_nofile 20000;
events {{
    worker_connections 16384;
}}"""


def _nginx_http_common(ctx: Context, tag: str) -> str:
    tmp = ctx.workdir / f"{tag}-tmp"
    tmp.mkdir(exist_ok=True)
    return f"""\
access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;"""


def _start_nginx(ctx: Context, tag: str, conf: str, cpu: int) -> Proc:
    path = ctx.workdir / f"{tag}.conf"
    path.write_text(conf)
    error_log = ctx.workdir / f"{tag}.error.log"
    argv = ["nginx", "-p", str(ctx.workdir), "-e", str(error_log), "-c", str(path)]
    return ctx.procs.start(tag, argv, cpu)


def _nginx_balancer(
    ctx: Context,
    tag: str,
    port: int,
    backends: Sequence[int],
    method: str = "least_conn;",
) -> str:
    servers = "\n".join(
        f"        server 127.0.0.1:{b} max_fails=5 fail_timeout=30s;" for b in backends
    )
    return f"""\
{_nginx_main(ctx, tag)}
http {{
    {_nginx_http_common(ctx, tag)}
    upstream pool {{
        {method}
{servers}
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_500;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


def _haproxy(
    port: int, backends: Sequence[int], tcp: bool, balance: str = "leastconn"
) -> str:
    if tcp:
        mode = "    mode tcp"
        check = "check inter 2s fall 3 rise 2"
        extra = ""
    else:
        mode = "    mode http\n    timeout http-keep-alive 60s"
        check = (
            "check inter 2s fall 3 rise 2"
            " observe layer7 error-limit 5 on-error mark-down"
        )
        extra = "    option httpchk GET /health\n"
    servers = "\n".join(
        f"    server s{i} 127.0.0.1:{b} {check}" for i, b in enumerate(backends, 1)
    )
    return f"""\
global
    maxconn 4000
    nbthread 1

defaults
{mode}
    maxconn 4000
    timeout connect 3s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    balance {balance}
{extra}{servers}
"""


def _caddyfile(ctx: Context, port: int, backends: Sequence[int]) -> str:
    upstreams = " ".join(f"127.0.0.1:{b}" for b in backends)
    return f"""\
{{
    admin off
    auto_https off
    storage file_system {ctx.workdir}/caddy-data
}}

http://127.0.0.1:{port} {{
    bind 127.0.0.1
    reverse_proxy {upstreams} {{
        lb_policy least_conn
        health_uri /health
        health_interval 2s
        fail_duration 30s
        max_fails 5
        unhealthy_status 5xx
        transport http {{
            keepalive 300s
            keepalive_idle_conns_per_host 64
        }}
    }}
}}
"""


# The txlb peers that run another algorithm than least_conn (its [txlb] lines).
_TXLB_ALGORITHMS = {
    "txlb-least-time": "least_time",
    "txlb-hash": "hash\nhash_key = header:X-User",
}


def _txlb_ini(
    port: int,
    stats_port: int,
    backends: Sequence[int],
    tcp: bool,
    health_interval: str,
    algorithm: str = "least_conn",
    sections: str | None = None,
    workers: int = 1,
) -> str:
    if sections is None:
        sections = "\n".join(
            f"[backend:b{i}]\naddress = 127.0.0.1:{b}\n"
            for i, b in enumerate(backends, 1)
        )
    return f"""\
[txlb]
listen = tcp:{port}:interface=127.0.0.1
stats_listen = tcp:{stats_port}:interface=127.0.0.1
mode = {"tcp" if tcp else "http"}
algorithm = {algorithm}
{f"workers = {workers}" if workers > 1 else ""}

[health]
path = /health
interval = {health_interval}
timeout = 1s

{sections}"""


def python_for_bench() -> str:
    """The venv's Python when there is one (it has txlb, aiohttp, Twisted)."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable
