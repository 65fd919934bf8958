"""
The bytes txlb writes on its own: chunk framing, and its plain-text answers
(refusals, errors), written by one function whichever part answers.
"""

from __future__ import annotations

import time

from twisted.web.http import RESPONSES, datetimeToString

__all__ = ["LAST_CHUNK", "REASONS", "chunk", "http_date", "plain"]

REASONS: dict[int, bytes] = {
    **RESPONSES,
    # RFC 9110's names, where Twisted's table has older ones or none.
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    505: b"HTTP Version Not Supported",
}

LAST_CHUNK = b"0\r\n\r\n"


class _HTTPDate:
    """The C{Date} header's value for the wall clock, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self, now: float | None = None) -> bytes:
        second = int(time.time() if now is None else now)
        if second != self._second:
            self._value = datetimeToString(second)
            self._second = second
        return self._value


http_date = _HTTPDate()


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def plain(
    status: int,
    message: str | bytes,
    *,
    connection: bytes = b"close",
    retry_after: bytes = b"",
    head_only: bool = False,
) -> bytes:
    """
    A whole plain-text answer of txlb's own: status line, C{Content-Type},
    C{Date}, C{Content-Length}, C{Retry-After} if given and C{Connection}
    (C{close}, C{keep-alive} for an HTTP/1.0 client that keeps it, or empty
    for none); the body is C{message} and a newline, left out when
    C{head_only} (the answer to a HEAD request).
    """
    if isinstance(message, str):
        message = message.encode("ascii", "replace")
    body = message + b"\n"
    head = [
        b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"")),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Date: %s\r\n" % http_date(),
        b"Content-Length: %d\r\n" % len(body),
    ]
    if retry_after:
        head.append(b"Retry-After: %s\r\n" % retry_after)
    if connection:
        head.append(b"Connection: %s\r\n" % connection)
    head.append(b"\r\n")
    return b"".join(head) if head_only else b"".join(head) + body
