"""
A probe's failure in words (L{txlb.health.reasons}): an L{HTTPProbe} on
treq and Twisted's real HTTP client, its connection on a memory reactor,
fed the bytes a broken backend sends, so the failures are the ones Twisted
really produces.
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent

from txlb.config import Address, HealthConfig
from txlb.health.probes import HTTPProbe, Verdict, describe
from txlb.health.reasons import LIMIT, escape

HEALTH = HealthConfig(path="/health", interval=2, timeout=1, rise=2, fall=3)


class _Endpoints:
    """Plain TCP endpoints on the memory reactor (no name resolution)."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor

    def endpointForURI(self, uri: Any) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(self.reactor, uri.host.decode(), uri.port)


def probe_answered(answer: bytes) -> str:
    """The reason of a probe whose backend sent C{answer} and closed."""
    reactor = MemoryReactorClock()
    agent = Agent.usingEndpointFactory(reactor, _Endpoints(reactor))
    d = HTTPProbe(HTTPClient(agent)).check(Address("127.0.0.1", 9001), HEALTH)
    verdicts: list[Verdict] = []
    d.addErrback(describe, HEALTH.timeout).addCallback(verdicts.append)
    [(_, _, factory, _, _)] = reactor.tcpClients
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.value().startswith(b"GET /health HTTP/1.1\r\n")
    if answer:
        protocol.dataReceived(answer)
    protocol.connectionLost(Failure(ConnectionDone()))
    [verdict] = verdicts
    assert not verdict.ok
    return verdict.reason


class ProbeReasonTests(SynchronousTestCase):
    def test_invalid_status_lines(self) -> None:
        """
        A status line Twisted cannot parse is an invalid HTTP response,
        said in words with the line quoted, not a Failure's repr.
        """
        self.assertEqual(
            probe_answered(b"HTTP/1.1 abc OK\r\n\r\n"),
            "probe failed: invalid HTTP response: non-integer status code:"
            " 'HTTP/1.1 abc OK'",
        )
        self.assertEqual(
            probe_answered(b"garbage\r\n\r\n"),
            "probe failed: invalid HTTP response: wrong number of parts: 'garbage'",
        )

    def test_backend_bytes_escaped_and_cut(self) -> None:
        """
        The backend's bytes are shown escaped (controls and bytes above
        0x7F as \\xNN, the backslash too) and cut to 80 characters.
        """
        reason = probe_answered(b"HTTP/1.1 2\x1b[31m\xff\\ OK\r\n\r\n")
        self.assertEqual(
            reason,
            "probe failed: invalid HTTP response: non-integer status code:"
            " 'HTTP/1.1 2\\x1b[31m\\xff\\x5c OK'",
        )
        reason = probe_answered(b"HTTP/1.1 x" + b"\x01" * 200 + b"\r\n\r\n")
        quoted = reason.split("'")[1]
        # 16 escapes fit with "..." in 80 characters, a 17th would not.
        self.assertEqual(quoted, "HTTP/1.1 x" + "\\x01" * 16 + "...")
        self.assertLessEqual(len(quoted), LIMIT)
        self.assertTrue(reason.isascii() and reason.isprintable(), reason)

    def test_broken_headers_and_bodies(self) -> None:
        """Bad headers, framing and bodies each say what was wrong."""
        cases = [
            (
                b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
                "invalid HTTP response: not enough values to unpack"
                " (expected 2, got 1)",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "invalid HTTP response: conflicting Content-Length headers: b'1,2'",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "invalid HTTP response: Chunk-size must be an integer",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
                "connection closed before the response ended",
            ),
            (b"", "connection closed before any response"),
        ]
        for answer, why in cases:
            self.assertEqual(probe_answered(answer), "probe failed: " + why, answer)

    def test_other_failures_keep_their_message(self) -> None:
        """A refused connection keeps Twisted's own words."""
        verdict = describe(Failure(ConnectionRefusedError()), 1)
        self.assertEqual(
            verdict.reason, "probe failed: Connection was refused by other side."
        )


class EscapeTests(SynchronousTestCase):
    def test_escape(self) -> None:
        """Printable ASCII stays; everything else is \\xNN, \\uNNNN or \\UNNNNNNNN."""
        self.assertEqual(escape(b"ok \x00\x7f\x80\\"), "ok \\x00\\x7f\\x80\\x5c")
        self.assertEqual(escape("é\u2028\U0001f600"), "\\xe9\\u2028\\U0001f600")

    def test_cut_never_splits_an_escape(self) -> None:
        """Cut to LIMIT characters with "...", at an escape's boundary."""
        self.assertEqual(escape(b"a" * LIMIT), "a" * LIMIT)
        self.assertEqual(escape(b"a" * (LIMIT + 1)), "a" * (LIMIT - 3) + "...")
        cut = escape(b"ab" + b"\xff" * 100)
        self.assertEqual(cut, "ab" + "\\xff" * 18 + "...")
        self.assertLessEqual(len(cut), LIMIT)
