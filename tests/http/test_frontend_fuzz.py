"""
Hypothesis against the front end: whatever bytes a client sends, txlb
either refuses them (a 4xx/5xx, connection closed, no backend contacted) or
sends the backend a request that parses cleanly, framed exactly once, with
no header the client could smuggle past the framing.
"""

from __future__ import annotations

import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Harness

_NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Upgrade",
    b"Expect",
    b"X-Forwarded-For",
    b"TE",
    b"Trailer",
    b"X-A",
    b"Host ",
    b" Host",
    b"Content-Length ",
]
_VALUES = [
    b"a",
    b"5",
    b"05",
    b"-1",
    b"5, 5",
    b"chunked",
    b"chunked, gzip",
    b"gzip, chunked",
    b"gzip",
    b"\xffchunked",
    b"a b",
    b"e.example/x@a",
    b"Chunked",
    b"close",
    b"keep-alive",
    b"upgrade",
    b"websocket",
    b"100-continue",
    b"a\rb",
    b"a\nb",
    b"a\x00b",
    b" x ",
    b"",
]
_SEPARATORS = [b"\r\n", b"\n", b"\r", b"\r\n ", b"\r\n\t"]

head_line = st.tuples(
    st.sampled_from(_NAMES),
    st.sampled_from([b": ", b":", b" : "]),
    st.sampled_from(_VALUES),
).map(b"".join)


@st.composite
def requests(draw: st.DrawFn, tidy: bool = False) -> bytes:
    """
    A request from the pieces above.  A C{tidy} one has a good request
    line, a valid Host first and CRLF line ends, so its other headers'
    values decide (the late verdicts on a head are found there).
    """
    methods = [b"GET", b"POST", b"PUT", b"CONNECT", b"G T", b"get"]
    targets = [b"/", b"/x?y", b"*", b"http://h/p", b"h:443", b""]
    versions = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 "]
    separators = _SEPARATORS
    if tidy:
        methods, targets, versions = [b"POST", b"GET"], [b"/"], [b"HTTP/1.1"]
        separators = [b"\r\n"]
    method = draw(st.sampled_from(methods))
    target = draw(st.sampled_from(targets))
    version = draw(st.sampled_from(versions))
    parts = [method + b" " + target + b" " + version]
    if tidy:
        parts.append(b"\r\nHost: a")
    for _ in range(draw(st.integers(0, 6))):
        parts.append(draw(st.sampled_from(separators)))
        parts.append(draw(head_line))
    ends = [b"\r\n\r\n"] if tidy else [b"\r\n\r\n", b"\n\n", b"\r\n\r\n"]
    parts.append(draw(st.sampled_from(ends)))
    body = draw(
        st.sampled_from(
            [b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"0\r\n\r\n"]
        )
    )
    return b"".join(parts) + body


class _Head:
    """What a backend's parser sees of the first request sent to it."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.complete = True


class FrontendFuzzTests(SynchronousTestCase):
    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(requests())
    def test_refused_or_forwarded_cleanly(self, raw: bytes) -> None:
        h = Harness(backends=1)
        client = h.client()
        client.send(raw)
        if not h.pending_connects():
            response = client.received()
            if response:
                # Refused: an error status, and the connection closed.
                status = int(response.split(b" ", 2)[1])
                self.assertGreaterEqual(status, 400, response)
                self.assertFalse(client.transport.connected, response)
            return
        sent = h.accept().received()
        head = _Head()
        parser = httptools.HttpRequestParser(head)
        try:
            parser.feed_data(sent)
        except httptools.HttpParserUpgrade:
            pass  # a WebSocket-style upgrade request: its head parsed
        self.assertTrue(head.complete, sent)
        names = [name for name, _ in head.headers]
        framing = [n for n in names if n in (b"content-length", b"transfer-encoding")]
        self.assertLessEqual(len(framing), 1, sent)
        self.assertEqual(names.count(b"host"), 1, sent)
        for hop in (b"te", b"trailer", b"keep-alive", b"proxy-connection"):
            self.assertNotIn(hop, names, sent)
        self.assertTrue(sent.split(b" ", 2)[1].startswith((b"/", b"*")), sent)

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(requests(tidy=True))
    def test_refused_sends_nothing_on_a_pooled_connection(self, raw: bytes) -> None:
        """
        With an idle backend connection already pooled, a request the
        front end refuses leaves not one byte on it (issue 16: llhttp's
        late verdicts on a head came after it had been sent).
        """
        h = Harness(backends=1)
        warm = h.client()
        warm.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = h.accept()
        backend.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        before = backend.received()
        client = h.client()
        client.send(raw)
        response = client.received()
        if response.startswith(b"HTTP/1.1 100 "):
            response = response.partition(b"\r\n\r\n")[2]
        if response:
            # Only the front end answers here (the backend never replies).
            self.assertGreaterEqual(int(response.split(b" ", 2)[1]), 400, response)
            self.assertEqual(backend.received(), before, raw)
            self.assertEqual(h.pending_connects(), [], raw)
