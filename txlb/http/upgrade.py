"""
The WebSocket hand-off (any protocol switch): once a backend answered
C{101 Switching Protocols}, the client's connection leaves the front end
and both connections become the two sides of a byte relay
(L{txlb.net.tunnel}).
"""

from __future__ import annotations

from txlb.http.headers import switching_head
from txlb.http.request import ClientRequest
from txlb.http.upstream import BackendConnection
from txlb.net.tunnel import Relay, splice

__all__ = ["hand_off"]


def hand_off(
    request: ClientRequest,
    conn: BackendConnection,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    rest: bytes,
    protocol: bytes,
    backend: str,
    relay: Relay,
) -> None:
    """
    Give C{request}'s client connection and the backend connection C{conn}
    to C{relay}: the client gets the backend's 101 head and C{rest} (what
    the backend sent after it), the backend what the client sent past its
    request head; from then on the relay carries raw bytes both ways.
    No more parsing or deadlines of the front end apply.

    @param protocol: the C{Upgrade} asked for (names the relay in the log).
    @param backend: the backend's name (likewise).
    """
    transport, early = request.take_over()
    relay.label = f"{protocol.decode('latin-1')} {request.peer or '?'} <-> {backend}"
    to_client = switching_head(reason, headers) + rest
    splice(relay, transport, conn.transport, to_client, early)
