"""
The names of the backends a discovery section finds: the section's name
and the address (C{web-10.0.0.5-8080}), always a valid backend name (1-64
of C{A-Z a-z 0-9 _ . -}), and distinct for distinct addresses.  Pure.
"""

from __future__ import annotations

import hashlib
import re

from txlb.schema import Address

__all__ = ["MAX_NAME", "backend_name"]

MAX_NAME = 64
_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


def backend_name(section: str, address: Address) -> str:
    """
    C{SECTION-HOST-PORT}; an IPv6 host's colons become C{_} (which no IP
    address holds, so names stay distinct).  Any other character that a
    name may not hold, or a name over 64 characters, is replaced and
    shortened with a hash of the whole, so that names stay distinct.
    """
    whole = f"{section}-{address.host.replace(':', '_')}-{address.port}"
    if len(whole) <= MAX_NAME and not _INVALID.search(whole):
        return whole
    digest = hashlib.sha256(f"{section}-{address}".encode()).hexdigest()[:10]
    clean = _INVALID.sub("_", whole)
    return f"{clean[: MAX_NAME - len(digest) - 1]}-{digest}"
