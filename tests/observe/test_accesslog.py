"""Tests for L{txlb.accesslog}."""

from __future__ import annotations

import io
import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.observe.accesslog import AccessLog, format_combined, format_json

RECORD = {
    "time": 0.0,
    "client": "192.0.2.7",
    "method": "GET",
    "uri": '/a"b',
    "protocol": "HTTP/1.1",
    "status": 200,
    "bytes": 5,
    "referer": "-",
    "user_agent": "ab/2.3",
    "backend": "web1",
    "upstream_time": 0.0015,
    "total_time": 0.002,
}


class FakeThreads:
    """Runs 'thread' work at once, in order."""

    def callFromThread(self, f, *a, **kw):  # type: ignore[no-untyped-def]
        f(*a, **kw)


class FormatTests(SynchronousTestCase):
    def test_combined(self) -> None:
        """Combined Log Format, quotes escaped, then backend and times."""
        self.assertEqual(
            format_combined(RECORD),
            '192.0.2.7 - - [01/Jan/1970:00:00:00 +0000] "GET /a\\"b HTTP/1.1" 200 5 '
            '"-" "ab/2.3" "web1" 0.001500 0.002000',
        )

    def test_json(self) -> None:
        """JSON lines carry every field."""
        self.assertEqual(json.loads(format_json(RECORD)), RECORD)


class AccessLogTests(SynchronousTestCase):
    def test_batches_written_on_flush(self) -> None:
        """Records are kept until the flush, then written as whole lines."""
        stream = io.StringIO()
        clock = Clock()
        log = AccessLog(stream, "json", FakeThreads(), clock)  # type: ignore[arg-type]
        log._pool.callInThreadWithCallback = (  # type: ignore[method-assign]
            lambda onResult, f, *a, **kw: onResult(True, f(*a, **kw))
        )
        log(RECORD)
        log(RECORD)
        self.assertEqual(stream.getvalue(), "")
        log.flush()
        lines = stream.getvalue().splitlines()
        self.assertEqual(
            [json.loads(line)["backend"] for line in lines], ["web1", "web1"]
        )
