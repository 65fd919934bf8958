"""
Hostile and malformed HTTP/1.1 requests against the real ``twistd -n txlb``
(issue 8), in front of a recording backend.

Each case sends raw bytes on a fresh connection and reads until txlb closes
it, after a good request has left an idle backend connection in txlb's pool
(a refused head once leaked onto one, issue 16).  A rejected request must
get its status, the connection must then be closed by txlb, and no byte of
the request may reach the backend: every request carries a marker
(``case-NAME``, usually as its path) that the recorder must never have
seen, and the pooled connection must still be open.  The statuses are
those RFC 9112 asks for, as HAProxy and nginx answer them (400 for a
malformed message; the limits 413, 414 and 431).

Cases the current front end (llhttp through httptools, since 06012b3) gets
wrong are marked C{xfail(strict=True)} one by one, each with what it does
instead; a mark comes off when its case passes.  (twisted.web's
C{HTTPChannel} before it also failed obs-fold, bare LF, no or two C{Host},
C{Transfer-Encoding} on HTTP/1.0, an overflowing chunk size, C{CONNECT},
absolute-form and the size limits, and added C{Content-Type: text/html}.)

Chunked bodies are streamed: the head goes to the backend before the body
has been read (nginx with C{proxy_request_buffering off} and HAProxy do the
same), so for a broken chunked body the backend may have the head.  For
those cases the check is that the backend never received a whole request it
could answer (the recorder answers only complete requests), that the client
never got that answer, and that the client connection was closed.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import TWISTD, Processes, free_port

REWRITE = "front end rewrite (issue 8)"
READ_TIMEOUT = 5.0


# --- the recording backend ------------------------------------------------


def _parse_request(buf: bytes) -> tuple[bytes, bytes, int] | None:
    """
    One complete request at the start of C{buf}: (head, body, bytes used),
    or L{None} while incomplete.  The body is decoded if it was chunked.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end]
    pos = end + 4
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(buf[pos:line_end].split(b";")[0], 16)
            pos = line_end + 2
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", pos - 2)
                if trailer_end < 0:
                    return None
                return head, body, trailer_end + 4
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos : pos + size]
            pos += size + 2
    length = int(fields.get(b"content-length", b"0"))
    if len(buf) < pos + length:
        return None
    return head, buf[pos : pos + length], pos + length


class Recorder:
    """
    A backend on a loopback port that records every byte it receives, per
    connection, and answers each complete request with C{200} and the
    request's target as the body (so order can be checked).
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: list[bytearray] = []
        self._open: dict[int, bytearray] = {}  # by id: bytearrays compare by value
        self._answered: list[tuple[bytes, bytes]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        record = bytearray()
        with self._lock:
            self._connections.append(record)
            self._open[id(record)] = record
        try:
            self._answer(conn, record)
        finally:
            with self._lock:
                del self._open[id(record)]

    def _answer(self, conn: socket.socket, record: bytearray) -> None:
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self._lock:
                    record += data
                buf += data
                while True:
                    try:
                        parsed = _parse_request(buf)
                    except ValueError:
                        return  # not HTTP as txlb should send it: hang up
                    if parsed is None:
                        break
                    head, body, used = parsed
                    buf = buf[used:]
                    target = head.split(b" ", 2)[1]
                    with self._lock:
                        self._answered.append((head, body))
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(target), target)
                    )

    def received(self) -> bytes:
        """Every byte received so far, on all connections."""
        with self._lock:
            return b"\0".join(bytes(c) for c in self._connections)

    def open_connections(self) -> int:
        """
        Connections txlb holds open to the recorder now that have carried a
        request (not a health check's TCP connect, which sends nothing).
        """
        with self._lock:
            return sum(1 for record in self._open.values() if record)

    def answered(self) -> list[tuple[bytes, bytes]]:
        """(head, body) of every request answered so far, in order."""
        with self._lock:
            return list(self._answered)

    def close(self) -> None:
        self._listener.close()


# --- txlb -------------------------------------------------------------------

LIMITS = "max_body_size = 1024\nmax_header_size = 8192\nmax_uri_length = 2048\n"


def lb_ini(port: int, backend_port: int, access_log: Path, limits: bool) -> str:
    """The one configuration every txlb here runs (with or without limits)."""
    return (
        "[txlb]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\n"
        f"access_log = {access_log}\n"
        "access_log_format = json\n"
        "shutdown_timeout = 1s\n"
        "retries = 0\n" + (LIMITS if limits else "") + "[health]\n"
        "path =\n"
        "[outlier]\n"
        "consecutive_failures = 0\n"
        "[backend:recorder]\n"
        f"address = 127.0.0.1:{backend_port}\n"
    )


class Setup:
    def __init__(self, port: int, recorder: Recorder) -> None:
        self.port = port
        self.recorder = recorder


def _start(directory: Path, limits: bool) -> Iterator[Setup]:
    recorder = Recorder()
    procs = Processes(directory)
    port = free_port()
    ini = directory / "lb.ini"
    ini.write_text(lb_ini(port, recorder.port, directory / "access.log", limits))
    try:
        procs.start(
            "txlb", [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(ini)], port
        )
        yield Setup(port, recorder)
    finally:
        procs.stop()
        recorder.close()


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    yield from _start(tmp_path_factory.mktemp("hostile"), limits=False)


@pytest.fixture(scope="module")
def limited_lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """txlb with the size limits of L{LIMITS}."""
    yield from _start(tmp_path_factory.mktemp("limits"), limits=True)


# --- the client -------------------------------------------------------------


class Response:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body


class Exchange:
    def __init__(self, raw: bytes, closed: bool) -> None:
        self.raw = raw
        self.closed = closed
        self.responses = parse_responses(raw)

    def __repr__(self) -> str:
        return f"<closed={self.closed} raw={self.raw[:300]!r}>"


def parse_responses(raw: bytes) -> list[Response]:
    """Every whole response in C{raw}; a body without framing runs to the end."""
    out = []
    while raw:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            break
        lines = raw[:end].split(b"\r\n")
        match = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0])
        if not match:
            break
        headers = [
            (n.strip().lower(), v.strip())
            for n, _, v in (line.partition(b":") for line in lines[1:])
        ]
        fields = dict(headers)
        rest = raw[end + 4 :]
        if b"content-length" in fields:
            length = int(fields[b"content-length"])
            body, raw = rest[:length], rest[length:]
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size == 0:
                    raw = rest.partition(b"\r\n")[2]
                    break
                body, rest = body + rest[:size], rest[size + 2 :]
        else:
            body, raw = rest, b""
        out.append(Response(int(match.group(1)), headers, body))
    return out


def send(port: int, data: bytes, timeout: float = READ_TIMEOUT) -> Exchange:
    """
    Send C{data} on a new connection, then read until txlb closes it or
    C{timeout} passes (then C{closed} is false).
    """
    raw = b""
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # closed while sending: read what was answered
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            raw += chunk
    return Exchange(raw, closed)


# --- the cases ----------------------------------------------------------------


def case(
    name: str,
    raw: bytes,
    statuses: tuple[int, ...] = (400,),
    *,
    head_may_reach: bool = False,
    fixed: bool = True,
) -> object:
    """
    One table row.  C{raw} writes C{{m}} where the marker path goes
    (C{/case-NAME}), or C{{n}} for the marker without its slash.

    @param head_may_reach: a broken chunked body: the head may have been
        streamed to the backend already (see the module docstring).
    @param fixed: false when the current front end gets this case wrong.
    """
    marks = () if fixed else (pytest.mark.xfail(strict=True, reason=REWRITE),)
    return pytest.param(name, raw, statuses, head_may_reach, id=name, marks=marks)


H = b"Host: h.example\r\n"

REJECTED = [
    # Request line (RFC 9112 section 3).
    case("no-target", b"GET\r\nX-Case: {m}\r\n\r\n"),
    case("extra-word", b"GET {m} HTTP/1.1 extra\r\n" + H + b"\r\n"),
    # An unsupported major version may be answered 505 (RFC 9110 15.6.6).
    case("version-9.9", b"GET {m} HTTP/9.9\r\n" + H + b"\r\n", (400, 505)),
    case("version-garbage", b"GET {m} HTTX/1.1\r\n" + H + b"\r\n"),
    case("method-not-token", b"G(T {m} HTTP/1.1\r\n" + H + b"\r\n"),
    case("target-control-char", b"GET {m}\x01x HTTP/1.1\r\n" + H + b"\r\n"),
    case("target-nul", b"GET {m}\x00x HTTP/1.1\r\n" + H + b"\r\n"),
    # No request-target form has a fragment (RFC 9112 3.2).
    case("target-fragment", b"GET {m}#x HTTP/1.1\r\n" + H + b"\r\n"),
    case("absolute-fragment", b"GET http://h.example{m}#x HTTP/1.1\r\n" + H + b"\r\n"),
    # Header names (RFC 9112 section 5.1: whitespace before the colon MUST
    # be rejected with 400; a name is a token).
    case("space-before-colon", b"GET {m} HTTP/1.1\r\nHost : h.example\r\n\r\n"),
    case("name-not-token", b"GET {m} HTTP/1.1\r\n" + H + b"Bad[Name]: x\r\n\r\n"),
    case("empty-name", b"GET {m} HTTP/1.1\r\n" + H + b": x\r\n\r\n"),
    case("no-colon", b"GET {m} HTTP/1.1\r\n" + H + b"NoColon\r\n\r\n"),
    # Header values: CR, LF and NUL are never field content (RFC 9110 5.5).
    case("value-bare-cr", b"GET {m} HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n"),
    case("value-nul", b"GET {m} HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n"),
    case(
        "value-bare-lf-injection",
        b"GET {m} HTTP/1.1\r\n" + H + b"X-A: a\nX-Injected: 1\r\n\r\n",
    ),
    # obs-fold: a server MUST reject it with 400 or unfold it (RFC 9112
    # 5.2); a proxy that forwards it lets two parsers disagree.
    case(
        "obs-fold-space",
        b"GET {m} HTTP/1.1\r\n" + H + b"X-A: 1\r\n 2\r\n\r\n",
    ),
    case(
        "obs-fold-tab",
        b"GET {m} HTTP/1.1\r\n" + H + b"X-A: 1\r\n\t2\r\n\r\n",
    ),
    # Bare LF line endings: RFC 9112 2.2 lets a recipient accept them (MAY);
    # a strict parser does not, so no two parsers disagree on the lines.
    case("bare-lf", b"GET {m} HTTP/1.1\nHost: h.example\n\n"),
    # Host (RFC 9112 3.2: MUST 400 without one, or with more than one).
    case("no-host", b"GET {m} HTTP/1.1\r\n\r\n"),
    case(
        "two-hosts",
        b"GET {m} HTTP/1.1\r\n" + H + b"Host: other.example\r\n\r\n",
    ),
    # Framing (RFC 9112 6.1, 6.3).
    case(
        "cl-and-te",
        b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    case(
        "cl-differing",
        b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
        b"Content-Length: 6\r\n\r\nhello!",
    ),
    # RFC 9110 8.6 allows taking identical repeats as one; txlb is strict.
    case(
        "cl-repeated-same",
        b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
        b"Content-Length: 5\r\n\r\nhello",
    ),
    case(
        "cl-list", b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello"
    ),
    case("cl-negative", b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n"),
    case("cl-plus", b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello"),
    case("cl-exponent", b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length: 1e3\r\n\r\n"),
    case(
        "cl-not-digits", b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n"
    ),
    case("cl-hex", b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello"),
    case("cl-empty", b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length:\r\n\r\n"),
    # Chunked must be the last coding, once; other codings cannot be framed
    # by a proxy (an unknown coding may also be 501, RFC 9112 6.1).
    case(
        "te-chunked-not-last",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n"
        b"0\r\n\r\n",
    ),
    # A final coding other than chunked: the body's length cannot be known,
    # 400 (RFC 9112 6.3, a MUST).  llhttp says so only after the head's
    # callback has returned: these heads once reached a pooled backend
    # connection (issue 16).
    *(
        case(
            f"te-final-{name}{'-head-alone' if alone else ''}",
            b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: " + coding + b"\r\n\r\n"
            b"" + (b"" if alone else b"5\r\nhello\r\n0\r\n\r\n"),
        )
        for name, coding in [
            ("xchunked", b"xchunked"),
            ("gzip", b"gzip"),
            ("blegh", b"blegh"),
            ("identity", b"identity"),
            ("chunked-param", b"chunked;x=1"),
            ("high-bytes", b"\xffchunked\xff"),
            ("high-byte-after", b"chunked\x80"),
            ("utf8-space", b"\xc2\xa0chunked"),
        ]
        for alone in (False, True)
    ),
    # A coding before chunked: 501 (RFC 9112 6.1), never dropped while the
    # body goes on coded; in one line or several.
    case(
        "te-gzip-chunked",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        (501,),
    ),
    case(
        "te-deflate-param-chunked",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: deflate;q=1 , chunked"
        b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        (501,),
    ),
    case(
        "te-gzip-line-then-chunked-line",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        (501,),
    ),
    case(
        "te-chunked-line-then-gzip-line",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    case(
        "te-chunked-line-twice",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    case(
        "te-not-token-before-chunked",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: \xffgzip, chunked\r\n\r\n"
        b"0\r\n\r\n",
    ),
    case(
        "te-chunked-twice",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n"
        b"0\r\n\r\n",
    ),
    case(
        "te-http10",
        b"POST {m} HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
    ),
    # Broken chunked bodies.
    case(
        "chunk-size-not-hex",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        head_may_reach=True,
    ),
    case(
        "chunk-size-negative",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n",
        head_may_reach=True,
    ),
    case(
        "chunk-size-overflow",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"ffffffffffffffffff\r\nx\r\n",
        head_may_reach=True,
    ),
    case(
        "chunk-missing-crlf",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhelloXX0\r\n\r\n",
        head_may_reach=True,
    ),
    # Host must be RFC 3986's host [":" port] (RFC 9112 3.2: else 400).
    *(
        case(f"host-{name}", b"GET {m} HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        for name, host in [
            ("space", b"a b"),
            ("tab", b"a\tb"),
            ("high-byte", b"h\xff.example"),
            ("utf8", b"caf\xc3\xa9.example"),
            ("path-userinfo", b"evil.example/x@a"),
            ("userinfo", b"user@h.example"),
            ("path", b"h.example/x"),
            ("query", b"h.example?x"),
            ("fragment", b"h.example#x"),
            ("backslash", b"h.example\\x"),
            ("port-letters", b"h.example:8o"),
            ("two-ports", b"h.example:80:80"),
            ("port-only", b":80"),
            ("bad-pct", b"h%zz.example"),
            ("ipv6-open", b"[::1"),
            ("ipv6-bad", b"[::1::2]"),
            ("ipv6-zone", b"[fe80::1%eth0]"),
            ("ipv6-trailing", b"[::1]x"),
            ("quote", b'h"x'),
            ("angle", b"<h>"),
        ]
    ),
    case("host-invalid-http10", b"GET {m} HTTP/1.0\r\nHost: a b\r\n\r\n"),
    # An absolute-form target's authority replaces Host: the same rules, and
    # userinfo is an error (RFC 9110 4.2.4), not stripped.
    case(
        "authority-userinfo",
        b"GET http://user@h.example{m} HTTP/1.1\r\n" + H + b"\r\n",
    ),
    case(
        "authority-port-letters",
        b"GET http://h.example:8o{m} HTTP/1.1\r\n" + H + b"\r\n",
    ),
    case(
        "authority-with-invalid-host",
        b"GET http://h.example{m} HTTP/1.1\r\nHost: a b\r\n\r\n",
    ),
    # CONNECT: txlb is no forward proxy.
    case(
        "connect",
        b"CONNECT {n}.evil.example:443 HTTP/1.1\r\nHost: {n}.evil.example:443\r\n\r\n",
        (405,),
    ),
]


def marker(name: str) -> bytes:
    return b"/case-" + name.encode()


def warm(setup: Setup) -> int:
    """
    Leave an idle backend connection in txlb's pool (a good request), so a
    refused request finds one to leak onto; the connections open to the
    recorder.
    """
    result = send(
        setup.port, b"GET /warm HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
    )
    assert [r.status for r in result.responses] == [200], result
    opened = setup.recorder.open_connections()
    assert opened >= 1
    return opened


def assert_rejected(
    setup: Setup,
    name: str,
    raw: bytes,
    statuses: tuple[int, ...],
    head_may_reach: bool,
) -> None:
    mark = marker(name)
    bare = mark.lstrip(b"/")
    data = raw.replace(b"{m}", mark).replace(b"{n}", bare)
    assert bare in data
    opened = warm(setup)
    result = send(setup.port, data)
    assert result.responses, result
    assert result.responses[0].status in statuses, result
    assert len(result.responses) == 1, result
    assert result.closed, result
    # Give a request that slipped through time to arrive before looking.
    time.sleep(0.2)
    if head_may_reach:
        assert not [h for h, _ in setup.recorder.answered() if bare in h]
        assert bare not in result.raw
    else:
        assert bare not in setup.recorder.received()
        # Nor was the pooled connection used and aborted.
        assert setup.recorder.open_connections() == opened


@pytest.mark.parametrize(("name", "raw", "statuses", "head_may_reach"), REJECTED)
def test_rejected(
    lb: Setup, name: str, raw: bytes, statuses: tuple[int, ...], head_may_reach: bool
) -> None:
    """
    A malformed or smuggling-prone request is answered with its error
    status, the connection is closed, and the backend never gets a byte of
    it, even with an idle connection to it pooled.
    """
    assert_rejected(lb, name, raw, statuses, head_may_reach)


def test_control_request_reaches_backend(lb: Setup) -> None:
    """The recorder, txlb and the client helper work: a valid GET is answered."""
    result = send(
        lb.port, b"GET /case-control HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
    )
    assert [r.status for r in result.responses] == [200], result
    assert result.responses[0].body == b"/case-control"
    assert result.closed
    assert b"GET /case-control HTTP/1.1\r\n" in lb.recorder.received()


# --- absolute form ------------------------------------------------------------


def test_absolute_form_goes_to_backend_in_origin_form(lb: Setup) -> None:
    """
    C{GET http://evil.example/x} goes to our backend, never to
    evil.example: in origin-form, with the target's authority as its only
    C{Host} (RFC 9112 3.2.2: a proxy MUST generate Host from the target).
    """
    result = send(
        lb.port,
        b"GET http://evil.example/case-absolute?q=1 HTTP/1.1\r\n"
        b"Host: other.example\r\nConnection: close\r\n\r\n",
    )
    assert [r.status for r in result.responses] == [200], result
    heads = [h for h, _ in lb.recorder.answered() if b"case-absolute" in h]
    assert len(heads) == 1, heads
    lines = heads[0].split(b"\r\n")
    assert lines[0] == b"GET /case-absolute?q=1 HTTP/1.1"
    hosts = [line for line in lines if line.lower().startswith(b"host:")]
    assert hosts == [b"Host: evil.example"]


def test_double_space_request_line_forwarded_rebuilt(lb: Setup) -> None:
    """
    C{GET  /x HTTP/1.1} (two spaces): RFC 9112 section 3 lets a recipient
    split the request line on any whitespace, and llhttp does.  txlb is
    the only parser that reads the client's line: the backend gets one it
    rebuilt with single spaces, so no second parser can read it otherwise
    (the choice is documented in the README's Hardening section).
    """
    result = send(
        lb.port,
        b"GET  /case-double-space HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
    )
    assert [r.status for r in result.responses] == [200], result
    heads = [h for h, _ in lb.recorder.answered() if b"case-double-space" in h]
    assert len(heads) == 1, heads
    assert heads[0].split(b"\r\n")[0] == b"GET /case-double-space HTTP/1.1"


# --- limits -------------------------------------------------------------------


LIMITED = [
    (
        "header-too-big",
        b"GET {m} HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
        431,
    ),
    ("uri-too-long", b"GET {m}?" + b"a" * 3000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    (
        "content-length-too-big",
        b"POST {m} HTTP/1.1\r\n" + H + b"Content-Length: 2000\r\n\r\n" + b"b" * 2000,
        413,
    ),
]


@pytest.mark.parametrize(
    ("name", "raw", "status"), LIMITED, ids=[c[0] for c in LIMITED]
)
def test_limit_rejected(limited_lb: Setup, name: str, raw: bytes, status: int) -> None:
    """
    Over C{max_header_size}, C{max_uri_length} or C{max_body_size} (a
    declared length): 431, 414 or 413, closed, and nothing reached the
    backend (not even the head of the too-long body).
    """
    assert_rejected(limited_lb, name, raw, (status,), False)


def test_limit_chunked_body_too_big(limited_lb: Setup) -> None:
    """
    A chunked body that grows past C{max_body_size} gets 413 and the
    connection is closed; the backend never has a complete request.
    """
    chunk = b"400\r\n" + b"c" * 1024 + b"\r\n"
    raw = (
        b"POST {m} HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + chunk * 2
        + b"0\r\n\r\n"
    )
    assert_rejected(limited_lb, "chunked-too-big", raw, (413,), True)


def test_limits_allow_what_fits(limited_lb: Setup) -> None:
    """
    At the limits (a 1024-byte body, a header section and a target just
    under theirs) requests pass: the limits reject only what is over.
    """
    rec = limited_lb.recorder
    body = b"d" * 1024
    result = send(
        limited_lb.port,
        b"POST /case-fits-body HTTP/1.1\r\n"
        + H
        + b"Content-Length: 1024\r\n\r\n"
        + body
        + b"GET /case-fits-head HTTP/1.1\r\n"
        + H
        + b"X-Big: "
        + b"e" * 7000
        + b"\r\n"
        b"\r\n"
        b"GET /case-fits-uri?"
        + b"f" * 1900
        + b" HTTP/1.1\r\n"
        + H
        + b"Connection: close\r\n\r\n",
    )
    assert [r.status for r in result.responses] == [200, 200, 200], result
    bodies = [b for h, b in rec.answered() if b"case-fits-body" in h]
    assert bodies == [body]


# --- pipelining ---------------------------------------------------------------


def test_pipelined_requests_answered_in_order(lb: Setup) -> None:
    """Three pipelined GETs in one send get three responses, in order."""
    paths = [b"/case-pipe-1", b"/case-pipe-2", b"/case-pipe-3"]
    data = b"".join(b"GET %s HTTP/1.1\r\n" % p + H + b"\r\n" for p in paths[:-1])
    data += b"GET %s HTTP/1.1\r\n" % paths[-1] + H + b"Connection: close\r\n\r\n"
    result = send(lb.port, data)
    assert [r.status for r in result.responses] == [200, 200, 200], result
    assert [r.body for r in result.responses] == paths
    assert result.closed


def test_pipelined_valid_then_invalid(lb: Setup) -> None:
    """
    A valid GET followed by a malformed request in the same send: the first
    is answered 200, the second 400, then the connection is closed, and the
    backend received only the first.
    """
    data = (
        b"GET /case-pipe-good HTTP/1.1\r\n" + H + b"\r\n"
        b"GET /case-pipe-bad HTTP/1.1\r\nHost : h.example\r\n\r\n"
    )
    result = send(lb.port, data)
    assert [r.status for r in result.responses] == [200, 400], result
    assert result.responses[0].body == b"/case-pipe-good"
    assert result.closed
    time.sleep(0.2)
    received = lb.recorder.received()
    assert b"case-pipe-good" in received
    assert b"case-pipe-bad" not in received


PIPELINED_AFTER_GOOD = [
    # (name, second request, its status): judged by its own line (issue 16:
    # the first request's line was, so a malformed one got 501).
    ("malformed-method", b"G(T {m} HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("no-target", b"GET\r\nX-Case: {m}\r\n\r\n", 400),
    ("unknown-method", b"FOO {m} HTTP/1.1\r\n" + H + b"\r\n", 501),
    (
        "unknown-final-coding",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "coding-before-chunked",
        b"POST {m} HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
        b"0\r\n\r\n",
        501,
    ),
    ("invalid-host", b"GET {m} HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
]


@pytest.mark.parametrize(
    ("name", "second", "status"),
    PIPELINED_AFTER_GOOD,
    ids=[c[0] for c in PIPELINED_AFTER_GOOD],
)
def test_pipelined_after_good(lb: Setup, name: str, second: bytes, status: int) -> None:
    """
    A good GET, or a good POST with a body, then a refused request, all in
    one send: 200, then the second's own status, closed; the backend got
    the first request and not a byte of the second.
    """
    mark = b"/case-after-" + name.encode()
    bare = mark.lstrip(b"/")
    for first in (
        b"GET /case-first HTTP/1.1\r\n" + H + b"\r\n",
        b"POST /case-first HTTP/1.1\r\n" + H + b"Content-Length: 8\r\n\r\nFOO / G(",
    ):
        opened = warm(lb)
        result = send(lb.port, first + second.replace(b"{m}", mark))
        assert [r.status for r in result.responses] == [200, status], result
        assert result.closed
        time.sleep(0.2)
        assert bare not in lb.recorder.received()
        assert lb.recorder.open_connections() == opened


def test_valid_hosts_forwarded(lb: Setup) -> None:
    """
    The forms RFC 3986 allows (a name with a port, IPv4, IPv6, IPvFuture,
    sub-delims, pct-encoding, and an empty Host) are forwarded as sent,
    and copied into X-Forwarded-Host.
    """
    hosts = [
        b"h.example:8080",
        b"192.0.2.1",
        b"[2001:db8::1]:443",
        b"[v1.x]",
        b"a-b_c~d!$&'()*+,;=",
        b"caf%C3%A9.example",
        b"",
    ]
    for i, host in enumerate(hosts):
        path = b"/case-host-ok-%d" % i
        result = send(
            lb.port,
            b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host),
        )
        assert [r.status for r in result.responses] == [200], (host, result)
        [head] = [h for h, _ in lb.recorder.answered() if path + b" " in h]
        lines = head.split(b"\r\n")[1:]
        assert [v for v in lines if v.lower().startswith(b"host:")] == [
            b"Host: " + host
        ], head
        assert b"X-Forwarded-Host: " + host in lines, head


# --- framing ------------------------------------------------------------------


def framing_lines(head: bytes) -> list[bytes]:
    return [
        line
        for line in head.split(b"\r\n")[1:]
        if line.lower().startswith((b"content-length:", b"transfer-encoding:"))
    ]


def test_content_length_body_framed_once(lb: Setup) -> None:
    """
    A POST with Content-Length reaches the backend with exactly one framing
    header, its Content-Length, and exactly its body.
    """
    body = b"hello, backend\r\n\x00\xff"
    result = send(
        lb.port,
        b"POST /case-frame-cl HTTP/1.1\r\n"
        + H
        + b"Content-Length: %d\r\n" % len(body)
        + b"Connection: close\r\n\r\n"
        + body,
    )
    assert [r.status for r in result.responses] == [200], result
    [(head, got)] = [(h, b) for h, b in lb.recorder.answered() if b"case-frame-cl" in h]
    assert framing_lines(head) == [b"Content-Length: %d" % len(body)]
    assert got == body


def test_chunked_body_framed_once(lb: Setup) -> None:
    """
    A POST with a chunked body reaches the backend with exactly one framing
    header, C{Transfer-Encoding: chunked}, no Content-Length, and the same
    body bytes.
    """
    result = send(
        lb.port,
        b"POST /case-frame-chunked HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n",
    )
    assert [r.status for r in result.responses] == [200], result
    [(head, got)] = [
        (h, b) for h, b in lb.recorder.answered() if b"case-frame-chunked" in h
    ]
    assert framing_lines(head) == [b"Transfer-Encoding: chunked"]
    assert got == b"hello, world"


# --- what the backend answered ------------------------------------------------


def test_no_content_type_added(lb: Setup) -> None:
    """
    A backend answer without C{Content-Type} reaches the client without
    one: the proxy never labels a body (twisted.web's Request, the
    front end before issue 8, added C{text/html}, which turns any backend
    text into HTML for a browser).
    """
    result = send(
        lb.port, b"GET /case-no-type HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
    )
    [response] = result.responses
    assert response.status == 200
    assert [v for n, v in response.headers if n == b"content-type"] == []
