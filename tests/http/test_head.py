"""Tests for L{txlb.http.head}: a parsed head judged, without a parser."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from txlb.config import ClientConfig
from txlb.http.head import Refused, judge
from txlb.http.request import ClientRequest


def head(uri: bytes, *headers: tuple[bytes, bytes]) -> ClientRequest:
    request = ClientRequest(None)  # type: ignore[arg-type]
    request.uri = uri
    request.headers = list(headers)
    return request


class JudgeTests(SynchronousTestCase):
    def refused(self, request: ClientRequest, **kw: Any) -> tuple[int, str]:
        args = {"version": "1.1", "method": b"GET", "keep_alive": True}
        args.update(kw)
        with self.assertRaises(Refused) as caught:
            judge(request, limits=ClientConfig(max_body_size=100), **args)
        return caught.exception.status, caught.exception.why

    def test_fills_what_the_proxy_reads(self) -> None:
        request = head(
            b"/a?b",
            (b"Host", b"example.com:8080"),
            (b"Content-Length", b"12"),
            (b"Connection", b"keep-alive, Upgrade"),
            (b"Upgrade", b"websocket"),
            (b"Expect", b"100-Continue"),
        )
        judge(request, "1.1", b"POST", True, ClientConfig())
        self.assertEqual(
            (request.version, request.method, request.host, request.body_length),
            (b"HTTP/1.1", b"POST", b"example.com:8080", 12),
        )
        self.assertEqual(request.connection, [b"keep-alive, Upgrade"])
        self.assertEqual(request.upgrade, b"websocket")
        self.assertTrue(request.expect_continue and request.keep_alive)

    def test_refusals(self) -> None:
        host = (b"Host", b"h")
        self.assertEqual(self.refused(head(b"/", host), version="0.9")[0], 400)
        self.assertEqual(self.refused(head(b"/", host), version="2.0")[0], 505)
        self.assertEqual(self.refused(head(b"h:443", host), method=b"CONNECT")[0], 405)
        self.assertEqual(self.refused(head(b"/"))[0], 400)
        self.assertEqual(self.refused(head(b"/", host, host))[0], 400)
        self.assertEqual(self.refused(head(b"/", (b"Host", b"a b")))[0], 400)
        te = (b"Transfer-Encoding", b"chunked")
        self.assertEqual(self.refused(head(b"/", te), version="1.0")[0], 400)
        gzip = (b"Transfer-Encoding", b"gzip, chunked")
        self.assertEqual(self.refused(head(b"/", host, gzip))[0], 501)
        big = (b"Content-Length", b"101")
        self.assertEqual(self.refused(head(b"/", host, big))[0], 413)
        self.assertEqual(self.refused(head(b"ftp://h/", host))[0], 400)

    def test_absolute_form_becomes_origin_form(self) -> None:
        request = head(b"http://example.com/x?y", (b"host", b"other"))
        judge(request, "1.1", b"GET", True, ClientConfig())
        self.assertEqual(request.uri, b"/x?y")
        self.assertEqual(request.host, b"example.com")
        self.assertEqual(request.headers, [(b"Host", b"example.com")])

    def test_http10_needs_no_host(self) -> None:
        request = head(b"/")
        judge(request, "1.0", b"GET", False, ClientConfig())
        self.assertEqual((request.version, request.body_length), (b"HTTP/1.0", 0))
