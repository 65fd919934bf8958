"""
What a request is known by, as lb.ini names it: C{client_ip},
C{header:NAME}, C{cookie:NAME}, C{uri} or C{query:NAME} (C{[txlb] hash_key},
C{[txlb] sticky}, C{[ratelimit] key}).  Pure: a frozen value and the
converters that read it; L{txlb.http.keys} reads the value off a request.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs

__all__ = [
    "HASH_KEYS",
    "LIMIT_KEYS",
    "RequestKey",
    "request_key",
    "sticky_cookie",
]

HASH_KEYS = ("client_ip", "header:NAME", "cookie:NAME", "uri", "query:NAME")
"""What C{[txlb] hash_key} may name."""

LIMIT_KEYS = ("client_ip", "header:NAME")
"""What C{[ratelimit] key} may name."""

# RFC 9110 token: header and cookie names.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
# A query parameter's name: anything that cannot end it or the query.
_PARAMETER = re.compile(r"[^\s&=#]{1,256}")
_NAMED = {"header": _TOKEN, "cookie": _TOKEN, "query": _PARAMETER}


@attrs.frozen
class RequestKey:
    """
    One way to know a request: C{kind} (C{client_ip}, C{header}, C{cookie},
    C{uri} or C{query}) and, for the last three but C{uri}, the C{name}
    (lower-cased for a header, as sent for a cookie or a query parameter).
    """

    kind: str
    name: bytes = b""

    def __str__(self) -> str:
        if not self.name:
            return self.kind
        return f"{self.kind}:{self.name.decode('ascii')}"


def _parse(text: str, allowed: tuple[str, ...]) -> RequestKey:
    value = text.strip()
    kind, sep, name = value.partition(":")
    if not sep:
        if kind in allowed:
            return RequestKey(kind)
        raise ValueError(text)
    if f"{kind}:NAME" not in allowed or not _NAMED[kind].fullmatch(name):
        raise ValueError(text)
    raw = name.encode("ascii")
    return RequestKey(kind, raw.lower() if kind == "header" else raw)


def request_key(allowed: tuple[str, ...]) -> Callable[[str], RequestKey]:
    """The converter of a key that may be any of C{allowed}."""

    def convert(text: str) -> RequestKey:
        return _parse(text, allowed)

    return convert


def sticky_cookie(text: str) -> RequestKey | None:
    """C{[txlb] sticky}: empty (off) or C{cookie:NAME}."""
    if not text.strip():
        return None
    return _parse(text, ("cookie:NAME",))
