"""
The soak's clients, on raw sockets: keep-alive GET clients whose every
request is accounted for, and the hostile mix (slowloris heads,
conflicting framing, abandoned connections).

What counts as a failed GET (the soak's contract is that none fails):

  - any answer but a 2xx, or a 2xx whose body is not the demo backend's;
  - a connection error or an end of the connection after the request was
    sent and before its whole response was read ("error mid-request");
  - no whole response within C{GET_TIMEOUT};
  - a connection to txlb that cannot be made, or bytes from txlb that no
    request asked for.

Not a failure: txlb closing the connection in an orderly way between
requests (after a response with C{Connection: close}, or an end of stream
seen before the next request is sent); the client then reconnects, and it
is counted apart.
"""

from __future__ import annotations

import bisect
import random
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

GET_TIMEOUT = 30.0
HOSTILE_TIMEOUT = 10.0
_HOST = b"soak.example"
# Latency buckets (seconds), log-spaced: p50/p99 without keeping samples.
_BUCKETS = [0.0001 * 1.25**i for i in range(64)]


class Tally:
    """Counters shared by the client threads, and the first failures' details."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.latency: Counter[int] = Counter()
        self.latency_max = 0.0

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def fail(self, key: str, detail: str) -> None:
        with self._lock:
            self.counts[key] += 1
            if len(self.failures) < 50:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {key}: {detail}")

    def took(self, seconds: float) -> None:
        with self._lock:
            self.latency[bisect.bisect_left(_BUCKETS, seconds)] += 1
            self.latency_max = max(self.latency_max, seconds)

    def percentile(self, p: float) -> float | None:
        with self._lock:
            total = sum(self.latency.values())
            seen = 0
            for bucket in sorted(self.latency):
                seen += self.latency[bucket]
                if seen >= total * p:
                    return _BUCKETS[min(bucket, len(_BUCKETS) - 1)]
        return None


class Cut(Exception):
    """The connection ended, or failed, before a whole response."""


class Connection:
    """One client connection to txlb, reading responses from a buffer."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def closed_by_peer(self) -> bool:
        """Whether txlb has ended the connection (checked without waiting)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError as e:
            raise Cut("timed out") from e
        except OSError as e:
            raise Cut(f"{type(e).__name__}: {e}") from e
        if not data:
            raise Cut("connection closed")
        self.buf += data

    def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        """The next whole response: status, headers (lower-case names), body."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(self.buf[:end])
        del self.buf[: end + 4]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise Cut(f"bad status line {lines[0][:60]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = self._chunked()
        else:
            body = self._exactly(int(headers.get(b"content-length", b"0")))
        return int(parts[1]), headers, body

    def _exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._fill()
        body = bytes(self.buf[:size])
        del self.buf[:size]
        return body

    def _chunked(self) -> bytes:
        body = b""
        while True:
            while (end := self.buf.find(b"\r\n")) < 0:
                self._fill()
            size = int(bytes(self.buf[:end]).split(b";")[0], 16)
            del self.buf[: end + 2]
            chunk = self._exactly(size + 2)
            if size == 0:
                return body
            body += chunk[:-2]


class Getter(threading.Thread):
    """A keep-alive client sending GETs back to back (see the module docstring)."""

    def __init__(self, number: int, port: int, tally: Tally, stop: threading.Event):
        super().__init__(name=f"getter-{number}", daemon=True)
        self.number = number
        self.port = port
        self.tally = tally
        self.stop = stop

    def run(self) -> None:
        conn: Connection | None = None
        sent = 0
        while not self.stop.is_set():
            if conn is None:
                try:
                    conn = Connection(self.port, GET_TIMEOUT)
                except OSError as e:
                    self.tally.fail("get_connect_failed", str(e))
                    time.sleep(0.1)
                    continue
                self.tally.add("get_connections")
            elif conn.buf:
                self.tally.fail("get_unsolicited_bytes", repr(bytes(conn.buf[:60])))
                conn.close()
                conn = None
                continue
            elif conn.closed_by_peer():
                self.tally.add("get_closed_between_requests")
                conn.close()
                conn = None
                continue
            sent += 1
            started = time.monotonic()
            try:
                conn.sock.sendall(
                    b"GET /?client=%d&n=%d HTTP/1.1\r\nHost: %s\r\n\r\n"
                    % (self.number, sent, _HOST)
                )
                status, headers, body = conn.response()
            except (OSError, Cut, ValueError) as e:
                self.tally.fail("get_failed_mid_request", f"{type(e).__name__}: {e}")
                conn.close()
                conn = None
                continue
            self.tally.took(time.monotonic() - started)
            if not 200 <= status < 300:
                self.tally.fail("get_failed_status", f"{status} {body[:80]!r}")
            elif not body.startswith(b"hello from "):
                self.tally.fail("get_failed_body", repr(body[:80]))
            else:
                self.tally.add("get_ok")
            if headers.get(b"connection", b"").lower() == b"close":
                self.tally.add("get_closed_after_response")
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


def _read_all(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read until the peer closes or C{timeout}: (bytes, closed by the peer)."""
    data = b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except OSError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def statuses(raw: bytes) -> list[int]:
    """The status codes of the whole responses in C{raw}, in order."""
    found = []
    while (end := raw.find(b"\r\n\r\n")) >= 0:
        lines = raw[:end].split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 ") or not lines[0][9:12].isdigit():
            break
        found.append(int(lines[0][9:12]))
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        raw = raw[end + 4 + length :]
    return found


H = b"Host: " + _HOST + b"\r\n"
GOOD = b"GET /?hostile=good HTTP/1.1\r\n" + H + b"\r\n"
# (name, bytes, the statuses txlb must answer, in order, before closing).
FRAMING: list[tuple[str, bytes, list[int]]] = [
    (
        "cl-and-te",
        b"POST /f HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [400],
    ),
    (
        "two-lengths",
        b"POST /f HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n"
        b"hello!",
        [400],
    ),
    (
        "chunked-twice",
        b"POST /f HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [400],
    ),
    (
        "final-gzip",
        b"POST /f HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
        [400],
    ),
    (
        "gzip-chunked",
        b"POST /f HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
        b"0\r\n\r\n",
        [501],
    ),
    (
        "te-http10",
        b"POST /f HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [400],
    ),
    (
        "space-before-colon",
        b"POST /f HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        [400],
    ),
    ("invalid-host", b"GET /f HTTP/1.1\r\nHost: a b\r\n\r\n", [400]),
    (
        "cl-and-te-after-good",
        GOOD + b"POST /f HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [200, 400],
    ),
]


class Hostile(threading.Thread):
    """
    One hostile act every C{period} seconds, in a fixed cycle: a request
    with conflicting framing (its statuses checked), then the abandoned
    connections: closed at once, closed after half a head, closed after
    the request before any answer, closed in the middle of a large
    response (at once, or after stalling).
    """

    def __init__(
        self, port: int, tally: Tally, stop: threading.Event, seed: int, period: float
    ) -> None:
        super().__init__(name="hostile", daemon=True)
        self.port = port
        self.tally = tally
        self.stop = stop
        self.rng = random.Random(seed)
        self.period = period

    def run(self) -> None:
        acts: list[Callable[[], None]] = [
            self.framing,
            self.connect_and_drop,
            self.framing,
            self.drop_mid_head,
            self.framing,
            self.drop_before_answer,
            self.framing,
            self.drop_mid_response,
        ]
        turn = 0
        while not self.stop.wait(self.period):
            act = acts[turn % len(acts)]
            turn += 1
            try:
                act()
            except OSError as e:
                self.tally.fail("hostile_connect_failed", f"{act.__name__}: {e}")

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def framing(self) -> None:
        name, raw, expected = self.rng.choice(FRAMING)
        with self._connect() as sock:
            try:
                sock.sendall(raw)
            except OSError:
                pass  # closed while sending: read what was answered
            data, closed = _read_all(sock, HOSTILE_TIMEOUT)
        got = statuses(data)
        if got == expected and closed:
            self.tally.add("framing_refused")
        else:
            self.tally.fail(
                "framing_unexpected", f"{name}: {got} closed={closed} {data[:120]!r}"
            )

    def connect_and_drop(self) -> None:
        self._connect().close()
        self.tally.add("abandoned_at_connect")

    def drop_mid_head(self) -> None:
        with self._connect() as sock:
            sock.sendall(b"GET /?hostile=half HTTP/1.1\r\nHost: so")
        self.tally.add("abandoned_mid_head")

    def drop_before_answer(self) -> None:
        with self._connect() as sock:
            sock.sendall(b"GET /_demo/sleep?ms=300 HTTP/1.1\r\n" + H + b"\r\n")
            time.sleep(0.05)
        self.tally.add("abandoned_before_answer")

    def drop_mid_response(self) -> None:
        """
        Read part of a 4 MB answer, then leave: at once, or after a
        second of reading nothing (txlb has paused the backend meanwhile).
        """
        stall = self.rng.random() < 0.5
        with self._connect() as sock:
            sock.sendall(b"GET /_demo/bytes?n=4000000 HTTP/1.1\r\n" + H + b"\r\n")
            got = 0
            while got < 20000:
                chunk = sock.recv(65536)
                if not chunk:
                    self.tally.fail("abandon_response_short", f"{got} bytes")
                    return
                got += len(chunk)
            if stall:
                time.sleep(1.0)
        self.tally.add("abandoned_after_stall" if stall else "abandoned_mid_response")


class Slowloris(threading.Thread):
    """
    Sends a head a byte a second, again and again: txlb must answer 408 and
    close each within C{header_timeout} (plus C{grace} for a busy machine).
    """

    def __init__(
        self,
        number: int,
        port: int,
        tally: Tally,
        stop: threading.Event,
        header_timeout: float,
        grace: float = 2.0,
    ) -> None:
        super().__init__(name=f"slowloris-{number}", daemon=True)
        self.port = port
        self.tally = tally
        self.stop = stop
        self.limit = header_timeout + grace

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.once()
            except OSError as e:
                self.tally.fail("slowloris_connect_failed", str(e))
                self.stop.wait(1)

    def once(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /?hostile=slow HTTP/1.1\r\n" + H + b"X-Slow: ")
            data = b""
            while True:
                if time.monotonic() - started > self.limit:
                    self.tally.fail("slowloris_overdue", f"open after {self.limit:g}s")
                    return
                readable, _, _ = select.select([sock], [], [], 1.0)
                if readable:
                    try:
                        chunk = sock.recv(4096)
                    except OSError:
                        chunk = b""
                    if chunk:
                        data += chunk
                        continue
                    break  # closed by txlb
                if self.stop.is_set():
                    return
                try:
                    sock.sendall(b"x")
                except OSError:
                    break
        if statuses(data) == [408]:
            self.tally.add("slowloris_cut")
        else:
            self.tally.fail("slowloris_unexpected", repr(data[:120]))
