"""
Header rules for a reverse proxy: hop-by-hop stripping and the request head
sent to a backend.  Pure functions over bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["HOP_BY_HOP", "connection_tokens", "request_head"]

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

# Set by the proxy itself, never copied from the client.
_REFRAMED = frozenset({b"content-length", b"x-forwarded-proto", b"x-forwarded-host"})


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
    headers: Iterable[tuple[bytes, list[bytes]]],
    client_ip: bytes,
    proto: bytes,
    body_length: int | None,
    default_host: bytes,
    drop: frozenset[bytes] = frozenset(),
) -> bytes:
    """
    Build the HTTP/1.1 request head sent to a backend.

    Hop-by-hop headers (and those named in C{Connection}) are dropped,
    C{X-Forwarded-For} is appended to, C{X-Forwarded-Proto} and
    C{X-Forwarded-Host} are set, and the body is framed exactly once from
    C{body_length}: C{None} is chunked, 0 is no body.

    @param headers: (name, values) pairs as the client sent them.
    @param default_host: the C{Host} to send when the client sent none
        (HTTP/1.0).
    @param drop: lower-cased names the client's C{Connection} header lists.
    """
    parts = [method, b" ", uri, b" HTTP/1.1\r\n"]
    append = parts.append
    forwarded_for = b""
    host = b""
    for name, values in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in _REFRAMED or lower in drop:
            continue
        if lower == b"x-forwarded-for":
            forwarded_for = b", ".join(values) + b", "
            continue
        if lower == b"host":
            host = values[0]
        for value in values:
            append(name)
            append(b": ")
            append(value)
            append(b"\r\n")
    if not host:
        host = default_host
        append(b"Host: " + host + b"\r\n")
    append(b"X-Forwarded-For: " + forwarded_for + client_ip + b"\r\n")
    append(b"X-Forwarded-Proto: " + proto + b"\r\n")
    append(b"X-Forwarded-Host: " + host + b"\r\n")
    if body_length is None:
        append(b"Transfer-Encoding: chunked\r\n")
    elif body_length or method in (b"POST", b"PUT", b"PATCH"):
        append(b"Content-Length: %d\r\n" % body_length)
    append(b"\r\n")
    return b"".join(parts)
