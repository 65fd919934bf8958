"""
A failed probe's reason in words, for the log and a backend's history:
C{invalid HTTP response: non-integer status code: 'HTTP/1.1 abc OK'},
never a Failure's repr.

treq's agent wraps what went wrong in C{ResponseFailed} or
C{ResponseNeverReceived}, each holding a list of Failures: the telling one
is read (a parse error, a malformed chunk, a bad header), and connection
losses alone are said as such.  The backend's bytes, and any text that may
carry them, are escaped (printable ASCII kept, anything else as C{\\xNN})
and cut to L{LIMIT} characters.  Pure.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

# Private in Twisted, and the only names for these errors: a parse error
# carries (reason, the bytes), a data loss means the body was cut short.
from twisted.web._newclient import ParseError
from twisted.web.client import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import _DataLoss

__all__ = ["LIMIT", "escape", "failure_reason"]

LIMIT = 80
_CUT = "..."
_LOSSES = (ConnectionDone, ConnectionLost, _DataLoss)


def failure_reason(failure: Failure) -> str:
    """What went wrong, in words (see the module docstring)."""
    value = failure.value
    if isinstance(value, ResponseFailed | ResponseNeverReceived):
        telling = _telling(value.reasons)
        if telling is not None:
            return f"invalid HTTP response: {_error_words(telling)}"
        if isinstance(value, ResponseNeverReceived):
            return "connection closed before any response"
        return "connection closed before the response ended"
    if isinstance(value, RequestGenerationFailed | RequestTransmissionFailed):
        telling = _telling(value.reasons)
        why = "connection lost" if telling is None else _error_words(telling)
        return f"request not sent: {why}"
    return escape(failure.getErrorMessage() or type(value).__name__)


def escape(text: bytes | str) -> str:
    """
    C{text} as printable ASCII: backslash, and anything outside space to
    C{~}, as C{\\xNN} (C{\\uNNNN} past 0xFF); cut to L{LIMIT} characters,
    never inside an escape, ending in C{...} when cut.
    """
    # Each piece is at least one character: LIMIT + 1 of them tell a cut.
    head = text[: LIMIT + 1]
    if isinstance(head, bytes):
        pieces = [_piece(code) for code in head]
    else:
        pieces = [_piece(ord(char)) for char in head]
    if sum(map(len, pieces)) <= LIMIT:
        return "".join(pieces)
    out: list[str] = []
    size = 0
    for piece in pieces:
        if size + len(piece) > LIMIT - len(_CUT):
            break
        out.append(piece)
        size += len(piece)
    return "".join(out) + _CUT


def _piece(code: int) -> str:
    if 0x20 <= code < 0x7F and code != 0x5C:
        return chr(code)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _telling(reasons: object) -> BaseException | None:
    """The first error among C{reasons} that is not a connection loss."""
    for reason in reasons if isinstance(reasons, list) else []:
        if isinstance(reason, Failure) and not reason.check(*_LOSSES):
            return reason.value
    return None


def _error_words(error: BaseException) -> str:
    if isinstance(error, ParseError) and len(error.args) == 2:
        why, data = error.args
        return f"{escape(str(why))}: '{escape(data)}'"
    text = str(error) or type(error).__name__
    if text.lower().startswith("invalid response: "):
        text = text[len("invalid response: ") :]
    return escape(text.rstrip("."))
