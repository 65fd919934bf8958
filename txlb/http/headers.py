"""
Header rules for a reverse proxy: hop-by-hop stripping, the forwarding
headers believed only from trusted proxies, and the request head sent to a
backend.  Pure functions over bytes.

Forwarding headers (C{X-Forwarded-For}, C{-Proto}, C{-Host}, C{Forwarded},
C{X-Real-IP}) say who the client is; anyone can write them, so they are
believed only when the connection comes from a trusted proxy (the
C{trusted_proxies} setting), as nginx's C{set_real_ip_from} and HAProxy do:

  - From anyone else they are dropped, and the backend is told the
    connection's own peer address, scheme and C{Host}.
  - From a trusted proxy, C{X-Forwarded-Proto}/C{-Host}, C{Forwarded} and
    C{X-Real-IP} pass as they are, and C{X-Forwarded-For} is walked from the
    right: trusted proxies' addresses are kept, the first other address is
    the client's and is kept, and whatever is left of it was written by that
    client and is dropped.  The peer is appended.  So the first address a
    backend sees is the real client's, whatever the client sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = [
    "FORWARDING",
    "HOP_BY_HOP",
    "TrustedProxies",
    "connection_tokens",
    "forwarded_chain",
    "request_head",
    "response_headers",
    "switching_head",
]

# RFC 9110 section 7.6.1, plus the non-standard ones proxies have always dropped.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Believed only from a trusted proxy (see the module docstring).
FORWARDING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"x-real-ip",
    }
)

# Never copied as they are: framed or set by the proxy itself.
_NOT_COPIED = HOP_BY_HOP | FORWARDING | {b"content-length"}

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """
    The addresses whose forwarding headers are believed.

    The networks are parsed once, at start-up; answers for connection peers
    are cached (a proxy in front connects from few addresses), so checking
    a peer is one dictionary look-up.
    """

    __slots__ = ("_cache", "_networks")

    _CACHE_SIZE = 4096

    def __init__(self, networks: Iterable[_Network]) -> None:
        self._networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, peer: str) -> bool:
        """Whether a connection's peer address (as text) is trusted."""
        known = self._cache.get(peer)
        if known is None:
            address = _ip(peer)
            known = address is not None and self.trusts(address)
            if len(self._cache) >= self._CACHE_SIZE:
                self._cache.clear()
            self._cache[peer] = known
        return known

    def trusts(self, address: _Address) -> bool:
        """Whether C{address} is in a trusted network (uncached)."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


def _ip(text: str) -> _Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _entry_address(entry: bytes) -> _Address | None:
    """
    The address in one C{X-Forwarded-For} entry: C{192.0.2.1},
    C{192.0.2.1:5555}, C{2001:db8::1} or C{[2001:db8::1]:5555}.
    """
    try:
        text = entry.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return _ip(text)


def forwarded_chain(
    values: Iterable[bytes], peer: bytes, trusted: TrustedProxies
) -> list[bytes]:
    """
    The C{X-Forwarded-For} addresses to pass on for a trusted peer, first
    the client's, last the peer's.

    Walking from the right, trusted addresses are kept and the first other
    one (the client) ends the walk; entries left of it, written by the
    client, are dropped, and so is an entry that is not an address.

    @param values: the header's values as received.
    @param peer: the trusted peer's address, appended.
    """
    entries = [e.strip() for value in values for e in value.split(b",")]
    entries = [e for e in entries if e]
    start = len(entries)
    while start:
        address = _entry_address(entries[start - 1])
        if address is None:
            break
        start -= 1
        if not trusted.trusts(address):
            break
    kept = entries[start:]
    kept.append(peer)
    return kept


def connection_tokens(values: Iterable[bytes]) -> frozenset[bytes]:
    """
    The lower-cased header names listed in C{Connection} header values.
    """
    return frozenset(
        token.strip().lower()
        for value in values
        for token in value.split(b",")
        if token.strip()
    )


def request_head(
    method: bytes,
    uri: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    client_ip: bytes,
    proto: bytes,
    body_length: int | None,
    default_host: bytes,
    drop: frozenset[bytes] = frozenset(),
    trusted: TrustedProxies | None = None,
) -> bytes:
    """
    Build the HTTP/1.1 request head sent to a backend.

    Hop-by-hop headers (and those named in C{Connection}) are dropped, the
    forwarding headers are set as the module docstring says, and the body
    is framed exactly once from C{body_length}: C{None} is chunked, 0 is no
    body.

    @param headers: (name, value) pairs as the client sent them, one per
        header line.
    @param client_ip: the connection's peer address.
    @param proto: the connection's scheme, C{http} or C{https}.
    @param default_host: the C{Host} to send when the client sent none
        (HTTP/1.0).
    @param drop: lower-cased names the client's C{Connection} header lists.
    @param trusted: given only when the peer is a trusted proxy: its
        forwarding headers are then believed.
    """
    parts = [method, b" ", uri, b" HTTP/1.1\r\n"]
    append = parts.append
    forwarded_for: list[bytes] | None = None
    forwarded_host = b""
    host: bytes | None = None
    if b"host" in drop:
        # Host is for every recipient: a Connection option cannot remove it.
        drop = drop - {b"host"}
    for name, value in headers:
        lower = name.lower()
        if lower in _NOT_COPIED or lower in drop:
            if trusted is None or lower not in FORWARDING or lower in drop:
                continue
            if lower == b"x-forwarded-for":
                if forwarded_for is None:
                    forwarded_for = []
                forwarded_for.append(value)
                continue
            if lower == b"x-forwarded-proto":
                proto = value.strip() or proto
                continue
            if lower == b"x-forwarded-host":
                forwarded_host = value.strip()
                continue
            # Forwarded and X-Real-IP from a trusted proxy pass as they are.
        elif lower == b"host" and host is None:
            host = value
        append(name)
        append(b": ")
        append(value)
        append(b"\r\n")
    if host is None:
        host = default_host
        append(b"Host: " + host + b"\r\n")
    if forwarded_for is not None and trusted is not None:
        client_ip = b", ".join(forwarded_chain(forwarded_for, client_ip, trusted))
    append(b"X-Forwarded-For: " + client_ip + b"\r\n")
    append(b"X-Forwarded-Proto: " + proto + b"\r\n")
    append(b"X-Forwarded-Host: " + (forwarded_host or host) + b"\r\n")
    if body_length is None:
        append(b"Transfer-Encoding: chunked\r\n")
    elif body_length or method in (b"POST", b"PUT", b"PATCH"):
        append(b"Content-Length: %d\r\n" % body_length)
    append(b"\r\n")
    return b"".join(parts)


def response_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], bool, bool]:
    """
    A backend's response headers as the client gets them: without the
    hop-by-hop ones and those the backend's C{Connection} names.

    @return: the headers, whether they hold a C{Date}, and whether they
        hold a C{Content-Length}.
    """
    drop: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name.lower() == b"connection":
            drop = connection_tokens([value])
    saw_date = length_known = False
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in drop:
            continue
        if lower == b"date":
            saw_date = True
        elif lower == b"content-length":
            length_known = True
        out.append((name, value))
    return out, saw_date, length_known


def switching_head(reason: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """
    The client's C{101} head after a backend switched protocols: the
    backend's end-to-end headers, and its C{Upgrade} with C{Connection:
    Upgrade} (the only hop-by-hop ones kept).
    """
    headers = list(headers)
    drop: frozenset[bytes] = frozenset()
    upgrade = b""
    for name, value in headers:
        lower = name.lower()
        if lower == b"connection":
            drop = connection_tokens([value])
        elif lower == b"upgrade":
            upgrade = value
    parts = [b"HTTP/1.1 101 ", reason or b"Switching Protocols", b"\r\n"]
    for name, value in headers:
        lower = name.lower()
        if lower not in HOP_BY_HOP and lower not in drop:
            parts += [name, b": ", value, b"\r\n"]
    parts += [b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n\r\n"]
    return b"".join(parts)
