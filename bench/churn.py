"""
Scenario 13 (issue 13): what discovery costs per request.  txlb balances over 100
backends found in DNS (a real dnsmasq on loopback, TTL 1 s), one of which
is swapped for another every second, against txlb over the same 100
backends listed in lb.ini.  Both probe every 60 s, so the difference is the
discovery: a lookup a second, an answer applied, a backend added and one
drained and removed each second.

The backends are one nginx on the backends' CPU listening on 127.0.3.1 to
127.0.3.101, one port: A records name addresses, not ports.
"""

from __future__ import annotations

import getpass
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import peers
from peers import Context
from procs import BenchError, Proc

POOL = 100
NAME = "pool.bench.test"


def addresses() -> list[str]:
    """The 101 backend addresses: 100 in the pool at a time, one swapped."""
    return [f"127.0.3.{i}" for i in range(1, POOL + 2)]


def start_backends(ctx: Context, port: int) -> Proc:
    """One nginx on the backends' CPU answering on every address, one port."""
    listens = "\n".join(f"        listen {a}:{port};" for a in addresses())
    conf = f"""\
{peers._nginx_main(ctx, "churn-backends")}
http {{
    {peers._nginx_http_common(ctx, "churn-backends")}
    server {{
{listens}
        location / {{
            default_type text/plain;
            return 200 "{peers.SMALL_BODY}";
        }}
    }}
}}
"""
    proc = peers._start_nginx(ctx, "churn-backends", conf, cpu=peers.LOAD_CPU)
    for a in (addresses()[0], addresses()[-1]):
        peers.wait_http(f"http://{a}:{port}/", proc, ctx.start_timeout, "churn")
    return proc


class Pool:
    """dnsmasq answering A records of L{NAME} from a hosts directory, TTL 1 s."""

    def __init__(self, ctx: Context) -> None:
        dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not Path(dnsmasq).exists():
            raise BenchError("dnsmasq is not installed (apt-get install dnsmasq-base)")
        self.dir = ctx.workdir / "churn-dns"
        self.dir.mkdir(exist_ok=True)
        (self.port,) = ctx.ports(1)
        self.write(addresses()[:POOL])
        argv = [
            dnsmasq,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local=/bench.test/",
            f"--hostsdir={self.dir}",
            "--local-ttl=1",
            "--pid-file=",
            f"--user={getpass.getuser()}",
        ]
        self.proc = ctx.procs.start("churn-dnsmasq", argv, peers.LOAD_CPU)
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self, members: Sequence[str]) -> None:
        tmp = self.dir / ".pool.tmp"
        tmp.write_text("".join(f"{a} {NAME}\n" for a in members))
        tmp.rename(self.dir / "pool")

    def churn(self) -> None:
        """Swap one backend a second, until stopped."""
        every = addresses()
        members = every[:POOL]
        spare = every[POOL]
        while not self._stop.wait(1.0):
            i = self.swaps % POOL
            members[i], spare = spare, members[i]
            self.write(members)
            self.swaps += 1

    def start_churn(self) -> None:
        self._thread = threading.Thread(target=self.churn, daemon=True)
        self._thread.start()

    def stop_churn(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def sections(pool: Pool | None, port: int) -> str:
    """The txlb backends: the DNS section, or the same 100 listed."""
    if pool is None:
        return "\n".join(
            f"[backend:b{i}]\naddress = {a}:{port}\n"
            for i, a in enumerate(addresses()[:POOL], 1)
        )
    return (
        "[discovery:pool]\ntype = dns\n"
        f"name = {NAME}\nport = {port}\nresolvers = 127.0.0.1:{pool.port}\n"
        "min_interval = 1s\nmax_interval = 1s\n"
    )
