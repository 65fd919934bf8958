"""
Reading a request's key (L{txlb.requestkey.RequestKey}) off a request:
for C{hash_key} and C{[ratelimit] key}.  Each reader is made once, at
start-up, for its one kind of key, so a request pays for the one look-up
it needs.

C{client_ip} is the client as the access log names it: the connection's
peer, or behind a trusted proxy (C{trusted_proxies}) the client its
C{X-Forwarded-For} names.  C{uri} is the request target as sent, path and
query (nginx's C{$request_uri}).  A header, cookie or query parameter that
is absent or empty gives no key.
"""

from __future__ import annotations

from collections.abc import Callable

from txlb.http.headers import TrustedProxies, forwarded_chain
from txlb.http.request import ClientRequest
from txlb.requestkey import RequestKey

__all__ = ["KeyReader", "client_ip", "cookie", "key_reader", "query_parameter"]

KeyReader = Callable[[ClientRequest], bytes | None]


def client_ip(request: ClientRequest, trusted: TrustedProxies | None) -> bytes:
    """The client's address: the peer, or the one a trusted proxy names."""
    peer = request.peer
    if trusted is not None and peer in trusted:
        chain = request.values(b"x-forwarded-for")
        if chain:
            first = forwarded_chain(chain, b"", trusted)[0]
            if first:
                return first
    return peer.encode("ascii")


def cookie(request: ClientRequest, name: bytes) -> bytes | None:
    """The first value of cookie C{name} in the request's C{Cookie} headers."""
    for header, value in request.headers:
        if header.lower() != b"cookie":
            continue
        for pair in value.split(b";"):
            found, sep, content = pair.strip().partition(b"=")
            if sep and found == name:
                content = content.strip()
                if content.startswith(b'"') and content.endswith(b'"'):
                    content = content[1:-1]
                return content or None
    return None


def query_parameter(uri: bytes, name: bytes) -> bytes | None:
    """The first value of parameter C{name} in C{uri}'s query, as sent."""
    query = uri.partition(b"?")[2]
    if not query:
        return None
    for pair in query.split(b"&"):
        found, _, value = pair.partition(b"=")
        if found == name:
            return value or None
    return None


def key_reader(key: RequestKey, trusted: TrustedProxies | None) -> KeyReader:
    """The function that reads C{key} off a request."""
    name = key.name
    kind = key.kind
    if kind == "client_ip":
        return lambda request: client_ip(request, trusted)
    if kind == "header":
        return lambda request: request.value(name) or None
    if kind == "cookie":
        return lambda request: cookie(request, name)
    if kind == "query":
        return lambda request: query_parameter(request.uri, name)
    if kind == "uri":
        return lambda request: request.uri
    raise ValueError(f"no such key: {key}")
