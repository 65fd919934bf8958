"""Tests for L{backends.echo}: the TCP and WebSocket echo servers used by the
TCP-mode and WebSocket integration tests."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from backends.__main__ import listen_echo, parse_args
from backends.echo import WebSocketEcho, accept_key, echo_factory, frame
from tests.relay_support import FakeTCP

MASK = b"\x37\xfa\x21\x3d"


class TCPEchoTests(SynchronousTestCase):
    def test_echo_and_half_close(self) -> None:
        """Bytes come back; the end of input closes once all is sent; the
        connection is its own producer (back-pressure) until then."""
        proto = echo_factory().buildProtocol(None)
        assert proto is not None
        transport = FakeTCP()
        transport.protocol = proto
        proto.makeConnection(transport)
        self.assertIs(transport.producer, transport)
        proto.dataReceived(b"abc")
        self.assertEqual(transport.value(), b"abc")
        proto.readConnectionLost()  # type: ignore[attr-defined]
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)

    def test_cli(self) -> None:
        """--tcp-echo listens with the echo factory on every port."""
        options = parse_args(["--tcp-echo", "--port", "9001", "--port", "9002"])
        self.assertTrue(options.tcp_echo)
        reactor = MemoryReactorClock()
        listen_echo(reactor, options)
        self.assertEqual([s[0] for s in reactor.tcpServers], [9001, 9002])


class WebSocketEchoTests(SynchronousTestCase):
    def test_accept_key(self) -> None:
        """The accept value is RFC 6455's own example."""
        self.assertEqual(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        )

    def test_frame_encoding(self) -> None:
        """RFC 6455 5.7's examples: an unmasked and a masked 'Hello'."""
        self.assertEqual(frame(0x1, b"Hello"), bytes.fromhex("810548656c6c6f"))
        self.assertEqual(
            frame(0x1, b"Hello", mask=MASK), bytes.fromhex("818537fa213d7f9f4d5158")
        )
        self.assertEqual(frame(0x2, b"x" * 256)[:4], bytes.fromhex("827e0100"))
        self.assertEqual(
            frame(0x2, b"x" * 65536)[:10],
            bytes.fromhex("827f") + bytes([0] * 5) + b"\x01\x00\x00",
        )

    def echo(self) -> tuple[WebSocketEcho, FakeTCP]:
        proto = WebSocketEcho()
        transport = FakeTCP()
        transport.protocol = proto
        proto.makeConnection(transport)
        return proto, transport

    def test_echo_split_frames(self) -> None:
        """A masked frame, delivered byte by byte, comes back unmasked; a
        ping gets a pong; a close is answered and closes."""
        proto, transport = self.echo()
        data = frame(0x1, b"Hello", mask=MASK) + frame(0x9, b"p", mask=MASK)
        for i in range(len(data)):
            proto.dataReceived(data[i : i + 1])
        self.assertEqual(transport.value(), frame(0x1, b"Hello") + frame(0xA, b"p"))
        transport.clear()
        proto.dataReceived(frame(0x8, b"\x03\xe8", mask=MASK))
        self.assertEqual(transport.value(), frame(0x8, b"\x03\xe8"))
        self.assertTrue(transport.disconnecting)

    def test_unmasked_refused(self) -> None:
        """A client frame without a mask is a protocol error (close 1002)."""
        proto, transport = self.echo()
        proto.dataReceived(frame(0x1, b"Hello"))
        self.assertEqual(transport.value(), frame(0x8, b"\x03\xea"))
        self.assertTrue(transport.disconnecting)
