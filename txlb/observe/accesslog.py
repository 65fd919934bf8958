"""
The access log: one line per request, Combined Log Format or JSON lines,
written by a single worker thread so a slow disk never blocks the reactor.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from txlb.http.headers import TrustedProxies, forwarded_chain
from txlb.http.request import ClientRequest

__all__ = ["AccessLog", "format_combined", "format_json", "record"]

_FLUSH_INTERVAL = 0.5
_MAX_BATCH = 512


def record(
    request: ClientRequest,
    trusted: TrustedProxies | None,
    status: int,
    sent: int,
    backend: str,
    started: float,
    upstream_started: float,
    now: float,
) -> dict[str, Any]:
    """
    The access log's record of one request: who, what, the answer, the
    backend and the times (C{upstream_started} 0: no backend was reached).
    Behind a trusted proxy the client is the one it names.
    """
    client = request.peer or "-"
    if trusted is not None and client in trusted:
        chain = request.values(b"x-forwarded-for")
        client = forwarded_chain(chain, b"", trusted)[0].decode("latin-1") or client
    return {
        "time": now,
        "client": client,
        "method": request.method.decode("latin-1"),
        "uri": request.uri.decode("latin-1"),
        "protocol": request.version.decode("latin-1"),
        "status": status,
        "bytes": sent,
        "referer": (request.value(b"referer") or b"-").decode("latin-1"),
        "user_agent": (request.value(b"user-agent") or b"-").decode("latin-1"),
        "backend": backend,
        "upstream_time": (now - upstream_started) if upstream_started else None,
        "total_time": now - started,
    }


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def format_combined(record: dict[str, Any]) -> str:
    """
    Combined Log Format, followed by the backend, the upstream time and the
    total time (seconds).
    """
    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(record["time"]))
    upstream = record["upstream_time"]
    return (
        f"{record['client']} - - [{when}] "
        f'"{_quote(record["method"])} {_quote(record["uri"])} {record["protocol"]}" '
        f"{record['status']} {record['bytes']} "
        f'"{_quote(record["referer"])}" "{_quote(record["user_agent"])}" '
        f'"{record["backend"]}" '
        f"{'-' if upstream is None else f'{upstream:.6f}'} "
        f"{record['total_time']:.6f}"
    )


def format_json(record: dict[str, Any]) -> str:
    """One JSON object per line, with the same fields."""
    return json.dumps(record, separators=(",", ":"))


FORMATS: dict[str, Callable[[dict[str, Any]], str]] = {
    "combined": format_combined,
    "json": format_json,
}


class AccessLog(Service):
    """
    Collects lines in memory and hands them in batches to one writer thread.

    Call the instance with a record for each request.
    """

    def __init__(
        self,
        stream: IO[str],
        fmt: str,
        reactor: IReactorThreads,
        clock: IReactorTime,
    ) -> None:
        self._stream = stream
        self._format = FORMATS[fmt]
        self._reactor = reactor
        self._pending: list[str] = []
        self._pool = ThreadPool(1, 1, "txlb-access-log")
        self._flusher = LoopingCall(self.flush)
        self._flusher.clock = clock

    @classmethod
    def open(
        cls, path: str, fmt: str, reactor: IReactorThreads, clock: IReactorTime
    ) -> AccessLog:
        """
        Open C{path} (C{-} is standard output) for appending.

        @raise OSError: if it cannot be opened.
        """
        stream = sys.stdout if path == "-" else open(path, "a", encoding="utf-8")  # noqa: SIM115
        return cls(stream, fmt, reactor, clock)

    def __call__(self, record: dict[str, Any]) -> None:
        self._pending.append(self._format(record))
        if len(self._pending) >= _MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand what is pending to the writer thread."""
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        deferToThreadPool(self._reactor, self._pool, self._write, lines)

    def _write(self, lines: list[str]) -> None:
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Close the file unused (it was opened only to check it can be)."""
        if self._stream is not sys.stdout:
            self._stream.close()

    def startService(self) -> None:
        super().startService()
        self._pool.start()
        self._flusher.start(_FLUSH_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._flusher.running:
            self._flusher.stop()
        self.flush()
        self._pool.stop()  # waits for the last batch
