"""
A request's C{Transfer-Encoding}: the one coding txlb understands is
C{chunked}, applied once, last.  Pure.

RFC 9112 decides the answers, in this order:

  - section 6.3: a request whose final coding is not C{chunked} has a body
    whose length cannot be determined: C{400} and close (a MUST, so it
    comes before the next rule: C{gzip} alone, C{xchunked}, C{chunked;x=1}
    are 400);
  - section 6.1: C{chunked} must not be applied more than once
    (C{chunked, chunked}, in one line or several): C{400};
  - section 6.1: a coding the server does not understand (C{gzip, chunked}):
    C{501} (RFC 9110 15.6.2), never dropped while the body goes on still
    coded.

The lines are one list (RFC 9110 5.3); empty list elements are ignored
(RFC 9110 5.6.1), a coding whose name is not a token is malformed (400).
llhttp refuses some of these itself (C{chunked} not last, twice), some only
after the head (a final coding that is not C{chunked}), and lets
C{gzip, chunked} through: the front end asks here first, so every one is
answered before anything is started towards a backend.
"""

from __future__ import annotations

import re

__all__ = ["transfer_coding_error"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def transfer_coding_error(values: list[bytes]) -> tuple[int, str] | None:
    """
    The status and reason that refuse a request with these
    C{Transfer-Encoding} values (one per header line), or L{None} when its
    body is plainly chunked.
    """
    codings = [c.strip(b" \t") for value in values for c in value.split(b",")]
    codings = [c for c in codings if c]
    if not codings:
        return 400, "an empty Transfer-Encoding"
    names = [c.partition(b";")[0].rstrip(b" \t").lower() for c in codings]
    if any(_TOKEN.fullmatch(name) is None for name in names):
        return 400, "a malformed transfer coding"
    if codings[-1].lower() != b"chunked":
        return 400, "a Transfer-Encoding that does not end in chunked"
    if b"chunked" in names[:-1]:
        return 400, "chunked applied more than once"
    if len(codings) > 1:
        name = names[0][:40].decode("ascii")
        return 501, f"transfer coding {name} not implemented"
    return None
