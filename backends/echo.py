"""
Echo servers for testing txlb's TCP mode and WebSocket tunnels.

  - L{TCPEcho}: every byte back, with back-pressure (the connection is its
    own producer, so a client that does not read stops the echo's reads) and
    half-close (the end of the client's input ends the echo's output once
    everything has been sent back).
  - L{accept_websocket}: the server side of an RFC 6455 handshake on a
    twisted.web request, then L{WebSocketEcho}, which sends every data frame
    back as it came (unmasked, as a server must), answers pings and
    closes.  Minimal on purpose: enough to prove a tunnel carries WebSocket.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.web.server import Request
from zope.interface import implementer

__all__ = ["TCPEcho", "WebSocketEcho", "accept_key", "accept_websocket", "frame"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_FRAME = 1 << 20
_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA


@implementer(IHalfCloseableProtocol)
class TCPEcho(Protocol):
    """Sends every byte back; honours half-close and back-pressure."""

    def connectionMade(self) -> None:
        self.transport.registerProducer(self.transport, True)  # type: ignore[union-attr]
        factory: Any = self.factory
        factory.connections = getattr(factory, "connections", 0) + 1

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        # Nothing more to read: never resume reading, finish sending, close.
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


def echo_factory() -> Factory[TCPEcho]:
    factory = Factory.forProtocol(TCPEcho)
    factory.noisy = False
    return factory


def accept_key(key: bytes) -> bytes:
    """The C{Sec-WebSocket-Accept} value for a C{Sec-WebSocket-Key}."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def frame(opcode: int, payload: bytes, mask: bytes = b"", fin: bool = True) -> bytes:
    """
    One WebSocket frame; masked with C{mask} (four bytes) if given, as a
    client's must be.
    """
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + payload


def accept_websocket(request: Request) -> bool:
    """
    Answer a WebSocket handshake with C{101} and make the connection a
    L{WebSocketEcho}.

    @return: C{False} (and nothing done) if the request is not a valid
        version 13 handshake.
    """
    headers = request.requestHeaders
    upgrade = b",".join(headers.getRawHeaders(b"upgrade", [])).lower()
    connection = b",".join(headers.getRawHeaders(b"connection", [])).lower()
    key = headers.getRawHeaders(b"sec-websocket-key", [b""])[0]
    version = headers.getRawHeaders(b"sec-websocket-version", [b""])[0]
    tokens = {t.strip() for t in connection.split(b",")}
    if upgrade != b"websocket" or b"upgrade" not in tokens or not key:
        return False
    if version != b"13":
        return False
    channel: Any = request.channel
    transport: Any = channel.transport
    transport.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
    )
    # The connection is the echo's from now on, not twisted.web's.
    channel.setTimeout(None)
    early = b"".join(getattr(channel, "_dataBuffer", ()))
    transport.unregisterProducer()
    echo = WebSocketEcho()
    if hasattr(transport, "wrappedProtocol"):
        transport.wrappedProtocol = echo
    else:
        transport.protocol = echo
    echo.makeConnection(transport)
    transport.resumeProducing()
    if early:
        echo.dataReceived(early)
    return True


class WebSocketEcho(Protocol):
    """Echoes data frames, answers pings, returns a close and closes."""

    def __init__(self) -> None:
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while self.transport is not None and self._frame():
            pass

    def _frame(self) -> bool:
        buffer = self._buffer
        if len(buffer) < 2:
            return False
        first, second = buffer[0], buffer[1]
        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(buffer) < 4:
                return False
            (length,) = struct.unpack("!H", buffer[2:4])
            offset = 4
        elif length == 127:
            if len(buffer) < 10:
                return False
            (length,) = struct.unpack("!Q", buffer[2:10])
            offset = 10
        if not second & 0x80 or length > _MAX_FRAME:
            # Unmasked (RFC 6455 5.1) or too big for a demo: protocol error.
            self.transport.write(frame(_CLOSE, struct.pack("!H", 1002)))  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
            self._buffer = b""
            return False
        if len(buffer) < offset + 4 + length:
            return False
        mask = buffer[offset : offset + 4]
        start = offset + 4
        payload = bytes(
            b ^ mask[i % 4] for i, b in enumerate(buffer[start : start + length])
        )
        self._buffer = buffer[start + length :]
        opcode = first & 0x0F
        if opcode == _CLOSE:
            self.transport.write(frame(_CLOSE, payload[:2]))  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
            return False
        if opcode == _PING:
            self.transport.write(frame(_PONG, payload))  # type: ignore[union-attr]
        elif opcode != _PONG:
            self.transport.write(frame(opcode, payload, fin=bool(first & 0x80)))  # type: ignore[union-attr]
        return True
