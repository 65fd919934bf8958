"""txlb.http.wire: the bytes txlb writes on its own."""

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString

from txlb.http import wire


class HTTPDateTests(SynchronousTestCase):
    def test_formats_the_second(self) -> None:
        date = wire._HTTPDate()
        self.assertEqual(date(784111777.9), b"Sun, 06 Nov 1994 08:49:37 GMT")
        self.assertEqual(date(784111777.9), datetimeToString(784111777))

    def test_follows_the_clock(self) -> None:
        date = wire._HTTPDate()
        first = date(1000.2)
        self.assertIs(date(1000.8), first)
        self.assertEqual(date(1001.0), datetimeToString(1001))
        self.assertEqual(date(999.5), datetimeToString(999))

    def test_wall_clock_by_default(self) -> None:
        self.assertRegex(
            wire.http_date().decode(), r"^\w{3}, \d\d \w{3} \d{4} [\d:]{8} GMT$"
        )


class PlainTests(SynchronousTestCase):
    def test_whole_answer(self) -> None:
        answer = wire.plain(503, "no backend available", retry_after=b"5")
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 503 Service Unavailable")
        self.assertIn(b"Retry-After: 5", lines)
        self.assertIn(b"Connection: close", lines)
        self.assertIn(b"Content-Length: %d" % len(body), lines)
        self.assertEqual(body, b"no backend available\n")

    def test_head_only(self) -> None:
        answer = wire.plain(404, "no", head_only=True, connection=b"")
        self.assertTrue(answer.endswith(b"\r\n\r\n"))
        self.assertIn(b"Content-Length: 3\r\n", answer)
        self.assertNotIn(b"Connection", answer)
