"""
L{txlb.http.requestline.method_error}: the request line judged is the
failing request's, found by replaying the read, even after others in it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txlb.http.requestline import method_error

GET = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
POST = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\nFOO / G(T / "
CHUNKED = (
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"c;x=1\r\nFOO / HTTP/1\r\n0\r\n\r\n"
)
UNKNOWN = (501, "method not implemented")
MALFORMED = (400, "invalid request line")


class MethodErrorTests(SynchronousTestCase):
    def test_alone(self) -> None:
        """A lone request line: a token and a space is 501, anything else 400."""
        self.assertEqual(method_error(b"FOO / HTTP/1.1\r\n\r\n", True), UNKNOWN)
        self.assertEqual(method_error(b"\r\nFOO / HTTP/1.1\r\n", True), UNKNOWN)
        self.assertEqual(method_error(b"G(T / HTTP/1.1\r\n\r\n", True), MALFORMED)
        self.assertEqual(method_error(b"GET\r\n\r\n", True), MALFORMED)
        self.assertEqual(method_error(b"\x16\x03\x01\x02", True), MALFORMED)

    def test_after_valid_requests(self) -> None:
        """
        After one or more good requests in the same read the failing line
        is the one judged, not the first of the read: a malformed line is
        400 however good the GET before it, an unknown method 501.
        """
        for before in (GET, GET * 3, POST, CHUNKED, GET + POST + CHUNKED):
            self.assertEqual(
                method_error(before + b"G(T / HTTP/1.1\r\n\r\n", True),
                MALFORMED,
                before,
            )
            self.assertEqual(
                method_error(before + b"\r\nFOO / HTTP/1.1\r\n\r\n", True),
                UNKNOWN,
                before,
            )

    def test_bodies_that_look_like_requests(self) -> None:
        """
        A body holding request-line bytes is not taken for the failing
        line: the replay knows where each request ends.
        """
        self.assertEqual(method_error(POST + b"<<<\r\n", True), MALFORMED)
        self.assertEqual(method_error(CHUNKED + b"(\r\n", True), MALFORMED)
        self.assertEqual(method_error(b"FOO / " + GET, True), UNKNOWN)

    def test_read_begun_inside_a_request(self) -> None:
        """
        A read that began inside a request cannot be replayed: 400, even if
        its first bytes look like a token and a space.
        """
        self.assertEqual(method_error(b"FOO / HTTP/1.1\r\n\r\n", False), MALFORMED)
