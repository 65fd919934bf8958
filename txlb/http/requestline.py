"""
The answer to llhttp's "invalid method": which request line it is about,
and whether that line is malformed (400) or names a method txlb does not
implement (501, RFC 9110 15.6.2: a token followed by a space).

llhttp knows a fixed list of methods and stops at the first byte that fits
none.  The failing request may follow others in the same read, and
httptools does not say where it stopped, so a throwaway parser replays the
read to find where the last complete request in it ends; the line after
that is the failing one.  This runs only on the error path (at most ~17
parses of one read, in C).  The replay must begin where a request begins:
a read that began inside a request (its start came in an earlier read)
cannot be replayed, and is answered 400.
"""

from __future__ import annotations

import re

import httptools

__all__ = ["method_error"]

_TOKEN_AND_SPACE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")


def method_error(data: bytes, between_requests: bool) -> tuple[int, str]:
    """
    The status and reason for an invalid method met in C{data}, one read.

    @param between_requests: whether the read began between two requests
        (the parser had no request in progress).
    """
    if not between_requests:
        return 400, "invalid request line"
    line = data[_last_end(data) :].lstrip(b"\r\n")
    if _TOKEN_AND_SPACE.match(line):
        return 501, "method not implemented"
    return 400, "invalid request line"


class _Ends:
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def on_message_complete(self) -> None:
        self.count += 1


def _completed(data: bytes) -> int:
    """How many requests a fresh parser completes in C{data}."""
    ends = _Ends()
    parser = httptools.HttpRequestParser(ends)
    try:
        parser.feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        pass
    return ends.count


def _last_end(data: bytes) -> int:
    """Where the last request that completes in C{data} ends (0: none)."""
    done = _completed(data)
    if not done:
        return 0
    low, high = 1, len(data)
    while low < high:
        middle = (low + high) // 2
        if _completed(data[:middle]) >= done:
            high = middle
        else:
            low = middle + 1
    return low
