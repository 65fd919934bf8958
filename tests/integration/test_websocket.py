"""
End to end: a WebSocket through the real ``twistd -n txlb`` in HTTP mode to
the demo backend's echo (C{/_demo/ws}), with a minimal RFC 6455 client
written here on plain sockets.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from collections.abc import Callable

from tests.integration.conftest import Backend, Balancer

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocket:
    """The client side of one WebSocket: handshake, masked frames out."""

    def __init__(self, port: int, path: str = "/_demo/ws") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" % (path.encode(), port, key)
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        self.status = lines[0]
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in lines[1:])
        }
        self.expected_accept = base64.b64encode(hashlib.sha1(key + GUID).digest())

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        assert data, "connection closed"
        return data

    def _need(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def receive(self) -> tuple[int, bytes]:
        first, second = self._need(2)
        assert not second & 0x80, "a server's frames are not masked"
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._need(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._need(8))
        return first & 0x0F, self._need(n)

    def close(self) -> None:
        self.sock.close()


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_websocket_echo_round_trip(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """Through HTTP mode: the handshake's 101 and accept key come back, a
    masked text and a 200 KB binary message are echoed, a close is
    answered; the tunnel counts as an active connection until it closes."""
    backend = demo_backend("ws")
    lb = balancer([(backend.name, backend.port)])
    ws = WebSocket(lb.port)
    try:
        assert ws.status.startswith(b"HTTP/1.1 101"), ws.status
        assert ws.headers[b"upgrade"].lower() == b"websocket"
        assert ws.headers[b"connection"].lower() == b"upgrade"
        assert ws.headers[b"sec-websocket-accept"] == ws.expected_accept
        ws.send(0x1, b"hello txlb")
        assert ws.receive() == (0x1, b"hello txlb")
        big = os.urandom(200_000)
        ws.send(0x2, big)
        assert ws.receive() == (0x2, big)
        assert [b["active_connections"] for b in lb.stats()["backends"]] == [1]
        ws.send(0x8, struct.pack("!H", 1000))
        assert ws.receive() == (0x8, struct.pack("!H", 1000))
        assert ws.sock.recv(10) == b""
    finally:
        ws.close()
    wait_for(
        lambda: lb.stats()["backends"][0]["active_connections"] == 0,
        "the tunnel's lease was released",
    )


def test_websockets_spread_and_plain_http_still_works(
    demo_backend: Callable[..., Backend], balancer: Callable[..., Balancer]
) -> None:
    """Long-lived WebSockets are spread by least connections and count
    while open; plain requests keep working beside them."""
    backends = [demo_backend(f"ws{i}") for i in range(2)]
    lb = balancer([(b.name, b.port) for b in backends])
    sockets = [WebSocket(lb.port) for _ in range(4)]
    try:
        for i, ws in enumerate(sockets):
            ws.send(0x1, b"n%d" % i)
            assert ws.receive() == (0x1, b"n%d" % i)
        active = [b["active_connections"] for b in lb.stats()["backends"]]
        assert active == [2, 2], active
        with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while piece := plain.recv(65536):
                answer += piece
            assert answer.startswith(b"HTTP/1.1 200"), answer
    finally:
        for ws in sockets:
            ws.close()
    wait_for(
        lambda: all(b["active_connections"] == 0 for b in lb.stats()["backends"]),
        "every tunnel's lease was released",
    )
