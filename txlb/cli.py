"""
C{txlb}, the operator's command: check a configuration file, and look at
and steer a running txlb through its stats and admin API (no reactor: the
standard library's urllib, straight to the URL, never through a proxy).

    txlb check [lb.ini]
    txlb status [URL] [--watch] [--interval 1] [--count N] [--json]
    txlb drain NAME       txlb enable NAME       txlb weight NAME W
        [--url URL] [--token-file PATH] [--timeout 5]

The URL is txlb's C{listen} address (or C{stats_listen}, when set):
C{--url}, else C{$TXLB_URL}, else C{http://127.0.0.1:8080}.  The admin
token (C{admin_token_file} in lb.ini) comes from C{--token-file PATH},
else C{$TXLB_ADMIN_TOKEN}, else the file C{$TXLB_ADMIN_TOKEN_FILE} names.
Errors are one line on standard error and exit status 1 (2 for a wrong
command line).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

__all__ = ["CLIError", "Client", "main", "render_status", "resolve_token", "watch"]

DEFAULT_URL = "http://127.0.0.1:8080"
_CLEAR = "\x1b[H\x1b[2J"
_MAX_WEIGHT = 1000.0
# RFC 6750's b64token, what txlb's admin_token_file holds.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_TOKEN_HINT = "pass --token-file PATH, or set TXLB_ADMIN_TOKEN or TXLB_ADMIN_TOKEN_FILE"


class CLIError(Exception):
    """What went wrong, in one line (printed as C{txlb: MESSAGE})."""


def resolve_token(token_file: str | None, env: Mapping[str, str]) -> str:
    """
    The admin token: from C{token_file}, else C{TXLB_ADMIN_TOKEN}, else the
    file named by C{TXLB_ADMIN_TOKEN_FILE} (surrounding whitespace dropped).
    """
    if token_file is None and env.get("TXLB_ADMIN_TOKEN"):
        return _checked(env["TXLB_ADMIN_TOKEN"].strip(), "TXLB_ADMIN_TOKEN")
    path = token_file or env.get("TXLB_ADMIN_TOKEN_FILE")
    if not path:
        raise CLIError(f"admin actions need the admin token: {_TOKEN_HINT}")
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise CLIError(f"cannot read the admin token file {path!r}: {reason}") from None
    if not token:
        raise CLIError(f"the admin token file {path!r} is empty")
    return _checked(token, f"the admin token file {path!r}")


def _checked(token: str, source: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise CLIError(
            f"{source} does not hold one token of A-Z a-z 0-9 - . _ ~ + / (as"
            " admin_token_file does)"
        )
    return token


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace").strip() or "no explanation"


class Client:
    """txlb's HTTP API at C{url}, with blocking calls that raise L{CLIError}."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        # Straight to txlb: an http_proxy in the environment is not for it.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(
            self.url + path, data=body, headers=headers, method=method
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as e:
            raise _HTTPFailure(e.code, _error_text(e.read())) from None
        except (urllib.error.URLError, OSError) as e:
            raise CLIError(self._unreachable(e)) from None
        try:
            return json.loads(data)
        except ValueError:
            raise CLIError(
                f"{self.url} is not a txlb stats API: {method} {path} did not"
                " answer JSON"
            ) from None

    def _unreachable(self, e: OSError) -> str:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        if isinstance(reason, TimeoutError):
            return f"txlb at {self.url} did not answer within {self._timeout:g}s"
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        else:
            why = getattr(reason, "strerror", None) or str(reason)
        return (
            f"cannot reach txlb at {self.url}: {why}; is it running, and is"
            " that its listen (or stats_listen) address? (--url or TXLB_URL)"
        )

    def stats(self) -> dict[str, Any]:
        """C{GET /api/server-stats}."""
        try:
            snapshot = self._call("GET", "/api/server-stats")
        except _HTTPFailure as e:
            raise CLIError(
                f"{self.url} is not a txlb stats API: GET /api/server-stats"
                f" answered {e.status} ({e.text})"
            ) from None
        if not isinstance(snapshot, dict) or "backends" not in snapshot:
            raise CLIError(f"{self.url}/api/server-stats is not txlb's snapshot")
        return snapshot

    def act(self, name: str, action: str, body: bytes | None = None) -> dict[str, Any]:
        """C{POST /api/backends/NAME/ACTION}; the backend's entry."""
        quoted = urllib.parse.quote(name, safe="")
        try:
            entry = self._call("POST", f"/api/backends/{quoted}/{action}", body or b"")
        except _HTTPFailure as e:
            raise CLIError(self._refused(e, name, action)) from None
        return entry  # type: ignore[no-any-return]

    def _refused(self, e: _HTTPFailure, name: str, action: str) -> str:
        if e.status == 404 and "backend" in e.text:
            try:
                names = ", ".join(b["name"] for b in self.stats()["backends"])
            except CLIError:
                return f"{action} {name}: {e.text}"
            return f"{action} {name}: {e.text}; the backends are: {names}"
        if e.status in (401, 403):
            hint = "" if "admin_token_file" in e.text else f" ({_TOKEN_HINT})"
            return f"{action} {name}: the admin token was refused: {e.text}{hint}"
        return f"{action} {name}: {self.url} answered {e.status}: {e.text}"


class _HTTPFailure(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, text)
        self.status = status
        self.text = text


# --- the status table -----------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _number(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


_COLUMNS = (
    "BACKEND", "ADDRESS", "STATE", "ACTIVE", "RPS", "ERR%",
    "P50ms", "P95ms", "P99ms", "WEIGHT", "REQUESTS", "FAILS", "EJECTED",
)  # fmt: skip
_LEFT = frozenset(("BACKEND", "ADDRESS", "STATE"))


def _row(b: Mapping[str, Any]) -> list[str]:
    limit = b.get("max_connections") or 0
    active = (
        f"{b['active_connections']}/{limit}" if limit else f"{b['active_connections']}"
    )
    latency = b.get("latency_ms") or {}
    weight = _number(b["weight"])
    if b["weight"] != b["configured_weight"]:
        weight += f"/{_number(b['configured_weight'])}"
    return [
        str(b["name"]),
        str(b["address"]),
        str(b["state"]),
        active,
        f"{b['rps']:.1f}",
        f"{100 * b['error_rate']:.1f}",
        _ms(latency.get("p50")),
        _ms(latency.get("p95")),
        _ms(latency.get("p99")),
        weight,
        str(b["total_requests"]),
        str(b["failures"]),
        str(b.get("ejections", 0)),
    ]


def render_status(snapshot: Mapping[str, Any], url: str) -> str:
    """The snapshot of C{/api/server-stats} as a summary line and a table."""
    t = snapshot["totals"]
    latency = t.get("latency_ms") or {}
    summary = (
        f"txlb at {url}  {snapshot['algorithm']}  up {_uptime(snapshot['uptime'])}"
        f"  healthy {t['healthy']}/{t['backends']}  available {t['available']}"
        f"  active {t['active_connections']}  rps {t['rps']:.1f}"
        f"  errors {100 * t['error_rate']:.1f}%  p99 {_ms(latency.get('p99'))} ms"
        f"  queued {t.get('queued', 0)}/{t.get('queue_size', 0)}"
        + ("  PANIC" if t.get("panic") else "")
    )
    rows = [list(_COLUMNS), *(_row(b) for b in snapshot["backends"])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [summary, ""]
    for row in rows:
        cells = [
            cell.ljust(w) if name in _LEFT else cell.rjust(w)
            for cell, w, name in zip(row, widths, _COLUMNS, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def watch(
    frame: Callable[[], str],
    out: IO[str],
    interval: float,
    count: int | None,
    sleep: Callable[[float], None] = time.sleep,
    clear: bool = False,
) -> int:
    """
    Show C{frame()} every C{interval} seconds, C{count} times (L{None}:
    until Ctrl-C), clearing the screen between frames if C{clear}, else
    separating them by a blank line.  A frame that fails shows its error
    and the next one tries again.

    @return: the exit status: 1 if the last frame failed, else 0.
    """
    shown = 0
    status = 0
    try:
        while count is None or shown < count:
            try:
                text, status = frame(), 0
            except CLIError as e:
                text, status = f"txlb: {e} (trying again every {interval:g}s)\n", 1
            if clear:
                out.write(_CLEAR)
            elif shown:
                out.write("\n")
            out.write(text)
            out.flush()
            shown += 1
            if count is None or shown < count:
                sleep(interval)
    except KeyboardInterrupt:
        out.write("\n")
    return status


# --- the command line -----------------------------------------------------------


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= _MAX_WEIGHT:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a weight is a number above 0 and at most {_MAX_WEIGHT:g}"
        )
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a number of seconds above 0"
        )
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from 1")
    return int(text)


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="txlb",
        description="Check a txlb configuration; watch and steer a running txlb.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--url",
        default=env.get("TXLB_URL") or DEFAULT_URL,
        help="txlb's listen or stats_listen URL (default: $TXLB_URL or %(default)s)",
    )
    remote.add_argument(
        "--timeout", type=_positive, default=5.0, help="seconds (default: 5)"
    )
    admin = argparse.ArgumentParser(add_help=False, parents=[remote])
    admin.add_argument(
        "--token-file",
        metavar="PATH",
        help="the admin token's file (else $TXLB_ADMIN_TOKEN, else the file"
        " $TXLB_ADMIN_TOKEN_FILE names)",
    )

    check = commands.add_parser(
        "check", help="check a configuration file, as twistd txlb --check"
    )
    check.add_argument("config", nargs="?", default="lb.ini", help="default: lb.ini")
    status = commands.add_parser(
        "status", parents=[remote], help="backends, states, load and latencies"
    )
    status.add_argument("target", nargs="?", metavar="URL", help="same as --url")
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    status.add_argument(
        "--interval",
        type=_positive,
        default=1.0,
        help="--watch: seconds between refreshes",
    )
    status.add_argument("--count", type=_count, help="--watch: stop after N refreshes")
    status.add_argument("--json", action="store_true", help="the raw snapshot as JSON")
    for name, text in (
        ("drain", "no new requests to a backend; those in flight finish"),
        ("enable", "put a drained backend back"),
    ):
        command = commands.add_parser(name, parents=[admin], help=text)
        command.add_argument("name", metavar="NAME")
    weight = commands.add_parser(
        "weight", parents=[admin], help="set a backend's weight"
    )
    weight.add_argument("name", metavar="NAME")
    weight.add_argument(
        "weight", metavar="W", type=_weight, help="above 0, at most 1000"
    )
    return parser


def _check(path: str, out: IO[str], err: IO[str]) -> int:
    from txlb.config import ConfigError
    from txlb.tap import check_config

    try:
        check_config(path)
    except ConfigError as e:
        err.write(f"txlb: {e}\n")
        return 1
    out.write(f"txlb: {path}: configuration is valid\n")
    return 0


def _acted(action: str, entry: Mapping[str, Any]) -> str:
    name, state = entry["name"], entry["state"]
    if action == "drain":
        active = entry["active_connections"]
        return f"{name} is {state}: no new requests; {active} in flight finish\n"
    if action == "enable":
        return f"{name} is {state}\n"
    weight = f"{name}: weight {_number(entry['configured_weight'])}"
    if entry["weight"] != entry["configured_weight"]:
        weight += f" (in use now: {_number(entry['weight'])}, {state})"
    return weight + "\n"


def _run(options: argparse.Namespace, env: Mapping[str, str], out: IO[str]) -> int:
    if options.command == "status":
        client = Client(options.target or options.url, timeout=options.timeout)

        def frame() -> str:
            snapshot = client.stats()
            if options.json:
                return json.dumps(snapshot, indent=2) + "\n"
            return render_status(snapshot, client.url)

        if not options.watch:
            out.write(frame())
            return 0
        clear = out.isatty()
        return watch(frame, out, options.interval, options.count, clear=clear)
    token = resolve_token(options.token_file, env)
    client = Client(options.url, token, options.timeout)
    body = None
    if options.command == "weight":
        body = json.dumps({"weight": options.weight}).encode()
    entry = client.act(options.name, options.command, body)
    out.write(_acted(options.command, entry))
    return 0


def main(
    argv: Sequence[str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """The C{txlb} console script; returns the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    env = os.environ if env is None else env
    options = _parser(env).parse_args(argv)
    if options.command == "check":
        return _check(options.config, out, err)
    try:
        return _run(options, env, out)
    except CLIError as e:
        err.write(f"txlb: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
