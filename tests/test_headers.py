"""Tests for L{txlb.headers}."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txlb.headers import connection_tokens, request_head


def head(headers: list[tuple[bytes, list[bytes]]], **kw: object) -> list[bytes]:
    args: dict[str, object] = {
        "method": b"GET",
        "uri": b"/p?q=1",
        "headers": headers,
        "client_ip": b"192.0.2.7",
        "proto": b"http",
        "body_length": 0,
        "default_host": b"",
    }
    args.update(kw)
    raw = request_head(**args)  # type: ignore[arg-type]
    assert raw.endswith(b"\r\n\r\n")
    return raw[:-4].split(b"\r\n")


class RequestHeadTests(SynchronousTestCase):
    def test_request_line_and_host(self) -> None:
        """The request line is HTTP/1.1 and Host passes through unchanged."""
        lines = head([(b"Host", [b"example.com:8080"])])
        self.assertEqual(lines[0], b"GET /p?q=1 HTTP/1.1")
        self.assertIn(b"Host: example.com:8080", lines)
        self.assertIn(b"X-Forwarded-Host: example.com:8080", lines)

    def test_hop_by_hop_removed(self) -> None:
        """Hop-by-hop headers and those named in Connection are dropped."""
        lines = head(
            [
                (b"Host", [b"h"]),
                (b"Keep-Alive", [b"timeout=5"]),
                (b"Te", [b"trailers"]),
                (b"Proxy-Authorization", [b"secret"]),
                (b"Upgrade", [b"websocket"]),
                (b"X-Private", [b"1"]),
                (b"X-Kept", [b"2"]),
            ],
            drop=connection_tokens([b"keep-alive, X-Private"]),
        )
        text = b"\n".join(lines).lower()
        for name in (
            b"keep-alive",
            b"te:",
            b"proxy-authorization",
            b"upgrade",
            b"x-private",
        ):
            self.assertNotIn(name, text)
        self.assertIn(b"X-Kept: 2", lines)

    def test_forwarded_headers(self) -> None:
        """X-Forwarded-For is appended to; Proto and Host are replaced."""
        lines = head(
            [
                (b"Host", [b"h"]),
                (b"X-Forwarded-For", [b"10.0.0.1", b"10.0.0.2"]),
                (b"X-Forwarded-Proto", [b"gopher"]),
                (b"X-Forwarded-Host", [b"evil"]),
            ],
            proto=b"https",
        )
        self.assertIn(b"X-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.7", lines)
        self.assertIn(b"X-Forwarded-Proto: https", lines)
        self.assertIn(b"X-Forwarded-Host: h", lines)
        self.assertEqual(sum(1 for line in lines if line.startswith(b"X-Forwarded")), 3)

    def test_framing_once(self) -> None:
        """The client's framing headers are replaced by the proxy's own."""
        client = [
            (b"Host", [b"h"]),
            (b"Content-Length", [b"5"]),
            (b"Transfer-Encoding", [b"chunked"]),
        ]
        chunked = head(client, method=b"POST", body_length=None)
        self.assertIn(b"Transfer-Encoding: chunked", chunked)
        self.assertFalse(
            [line for line in chunked if line.startswith(b"Content-Length")]
        )
        sized = head(client, method=b"POST", body_length=5)
        self.assertIn(b"Content-Length: 5", sized)
        self.assertFalse(
            [line for line in sized if line.startswith(b"Transfer-Encoding")]
        )
        empty_post = head([(b"Host", [b"h"])], method=b"POST", body_length=0)
        self.assertIn(b"Content-Length: 0", empty_post)
        get = head([(b"Host", [b"h"])])
        self.assertFalse(
            [line for line in get if line.startswith((b"Content-Length", b"Transfer"))]
        )

    def test_http10_without_host(self) -> None:
        """An HTTP/1.0 request without Host gets the default host."""
        lines = head([], default_host=b"127.0.0.1")
        self.assertIn(b"Host: 127.0.0.1", lines)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        b"Connection",
                        b"Keep-Alive",
                        b"X-A",
                        b"Host",
                        b"Te",
                        b"X-Forwarded-For",
                        b"Transfer-Encoding",
                        b"Content-Length",
                        b"Upgrade",
                        b"Accept",
                    ]
                ),
                st.lists(
                    st.binary(min_size=1, max_size=8).filter(
                        lambda v: b"\r" not in v and b"\n" not in v
                    ),
                    min_size=1,
                    max_size=2,
                ),
            ),
            max_size=8,
        ),
        st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
    )
    def test_fuzz_framing(
        self, headers: list[tuple[bytes, list[bytes]]], length: int | None
    ) -> None:
        """Whatever the client sends, exactly one framing header (or none) goes out."""
        lines = head(headers, method=b"PUT", body_length=length)
        framing = [
            line
            for line in lines
            if line.lower().startswith((b"content-length:", b"transfer-encoding:"))
        ]
        self.assertEqual(len(framing), 1)
        hop = [
            line
            for line in lines
            if line.lower().startswith(
                (b"connection:", b"keep-alive:", b"te:", b"upgrade:")
            )
        ]
        self.assertEqual(hop, [])
        self.assertEqual(
            sum(1 for line in lines if line.startswith(b"X-Forwarded-For:")), 1
        )
