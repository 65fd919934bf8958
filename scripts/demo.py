"""
Run the txlb demo: three demo backends of different speeds behind txlb.

Run by ``make demo`` with the virtualenv's Python, so the installed txlb and
its ``twistd`` plugin are used.  It waits until everything answers, prints
the URLs, and on Ctrl-C (SIGINT) or SIGTERM stops every process it started.

Environment (all optional):
  TXLB_DEMO_PORT           the balancer's port (default: the one in lb.ini, 8080)
  TXLB_DEMO_BACKEND_PORTS  comma list of the backends' ports (default: lb.ini's)
  TXLB_DEMO_DELAYS         comma list of service times (default: 5ms,20ms,80ms)
  TXLB_DEMO_CAPACITY       requests each backend serves at once (default: 4)

With other ports than lb.ini's, a copy of lb.ini with those ports is written
to test-output/demo/lb.ini and used instead.  Logs go to test-output/demo/.
"""

from __future__ import annotations

import configparser
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "test-output" / "demo"
BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class DemoError(Exception):
    """The demo could not start; C{str()} says why."""


def _read_config(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        default_section="\x00no-defaults",
    )
    parser.read(path, encoding="utf-8")
    return parser


def _port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def _listen_port(listen: str) -> int:
    """The port of the first C{tcp:PORT[:...]} endpoint of C{listen}."""
    first = listen.split(",")[0].strip()
    kind, _, rest = first.partition(":")
    if kind != "tcp":
        raise DemoError(f"lb.ini: [txlb] listen {listen!r}: the demo needs tcp:PORT")
    return int(rest.split(":")[0])


def _plan(
    config_path: Path,
) -> tuple[Path, int, list[tuple[str, int, str]]]:
    """
    Decide the config file, the balancer's port and each backend's
    (name, port, delay), applying the environment's overrides.
    """
    parser = _read_config(config_path)
    sections = [s for s in parser.sections() if s.startswith("backend:")]
    ports = [_port_of(parser[s]["address"]) for s in sections]
    listen_port = _listen_port(parser.get("txlb", "listen", fallback="tcp:8080"))

    env_ports = os.environ.get("TXLB_DEMO_BACKEND_PORTS", "")
    new_ports = [int(p) for p in env_ports.split(",") if p.strip()] or ports
    if len(new_ports) != len(sections):
        raise DemoError(
            f"TXLB_DEMO_BACKEND_PORTS lists {len(new_ports)} ports;"
            f" lb.ini has {len(sections)} backends"
        )
    new_listen = int(os.environ.get("TXLB_DEMO_PORT") or listen_port)
    delays = os.environ.get("TXLB_DEMO_DELAYS", "5ms,20ms,80ms").split(",")
    delays = [delays[min(i, len(delays) - 1)].strip() for i in range(len(sections))]

    if new_ports != ports or new_listen != listen_port:
        for section, port in zip(sections, new_ports, strict=True):
            host = parser[section]["address"].rpartition(":")[0]
            parser[section]["address"] = f"{host}:{port}"
        parser["txlb"]["listen"] = f"tcp:{new_listen}"
        config_path = RUN / "lb.ini"
        with config_path.open("w", encoding="utf-8") as f:
            parser.write(f)
    names = [s[len("backend:") :] for s in sections]
    return config_path, new_listen, list(zip(names, new_ports, delays, strict=True))


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the demo dies without cleaning up."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Demo:
    """The child processes and their log files."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> None:
        log = (RUN / f"{name}.log").open("wb")
        with log:
            child = subprocess.Popen(
                argv,
                cwd=RUN,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C reaches only the demo, which then
                # stops the children in order.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.children.append((name, child))

    def check_alive(self) -> None:
        for name, child in self.children:
            if child.poll() is not None:
                tail = (RUN / f"{name}.log").read_text(errors="replace")[-2000:]
                hint = ""
                if "already in use" in tail:
                    hint = (
                        "\nOther ports: TXLB_DEMO_PORT=18080"
                        " TXLB_DEMO_BACKEND_PORTS=19001,19002,19003 make demo"
                    )
                raise DemoError(
                    f"{name} exited with status {child.returncode}; its log ends:\n"
                    f"{tail}{hint}"
                )

    def stop(self) -> None:
        """SIGTERM every child (the balancer first), then SIGKILL stragglers."""
        for _, child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"demo: {name} did not stop; killing it", file=sys.stderr)
                child.kill()
                child.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            response.read()
            status: int = response.status
            return 200 <= status < 300
    except (OSError, urllib.error.HTTPError):
        return False


def _wait_for(demo: Demo, urls: list[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(urls)
    while waiting:
        demo.check_alive()
        waiting = [url for url in waiting if not _answers(url)]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise DemoError(
                f"no answer after {START_TIMEOUT:g}s from: {', '.join(waiting)};"
                f" see the logs in {RUN}"
            )
        time.sleep(0.2)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    RUN.mkdir(parents=True, exist_ok=True)
    capacity = os.environ.get("TXLB_DEMO_CAPACITY", "4")
    demo = Demo()
    try:
        config, port, backends = _plan(ROOT / "lb.ini")
        for name, backend_port, delay in backends:
            demo.start(
                name,
                [
                    sys.executable,
                    "-m",
                    "backends",
                    "--name",
                    name,
                    "--port",
                    str(backend_port),
                    "--delay",
                    delay,
                    "--capacity",
                    capacity,
                    "--error-rate",
                    "0",
                ],
            )
        _wait_for(demo, [f"http://127.0.0.1:{p}/health" for _, p, _ in backends])
        demo.start(
            "txlb",
            [str(BIN / "twistd"), "-n", "--pidfile=", "txlb", "--config", str(config)],
        )
        base = f"http://127.0.0.1:{port}"
        _wait_for(demo, [f"{base}/api/server-stats", f"{base}/"])

        print(f"""
txlb demo is running ({config.relative_to(ROOT)}; logs in {RUN.relative_to(ROOT)}/).
""")
        for name, backend_port, delay in backends:
            print(
                f"  backend {name:<6} http://127.0.0.1:{backend_port}/"
                f"  delay {delay}, capacity {capacity}"
            )
        print(f"""
  proxy      {base}/
  dashboard  {base}/dashboard
  stats      {base}/api/server-stats

Put some load on it, then watch the stats (least connections sends most
requests to the fastest backend):

  ab -n 2000 -c 20 {base}/

Press Ctrl-C to stop.
""")
        sys.stdout.flush()
        while True:
            demo.check_alive()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ndemo: stopping", file=sys.stderr)
        return 0
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    finally:
        # Signals during clean-up must not cut it short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
