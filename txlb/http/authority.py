"""
Whether a C{Host} value or an absolute-form target's authority is one:
RFC 3986 section 3.2's C{host [ ":" port ]}, without userinfo (RFC 9110
4.2.4: a recipient treats userinfo in an http(s) URI as an error).  Pure.

    host        = IP-literal / IPv4address / reg-name
    IP-literal  = "[" ( IPv6address / IPvFuture ) "]"
    IPvFuture   = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
    reg-name    = *( unreserved / pct-encoded / sub-delims )
    port        = *DIGIT

An IPv4address is also a reg-name (digits and dots), so it needs no rule
of its own.  The host must not be empty: an http(s) URI with an empty host
is invalid (RFC 9110 4.2.1); an empty C{Host} field, which RFC 9112 3.2
allows, is the front end's to accept before asking here.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["authority_error"]

_REG_NAME = re.compile(rb"(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+")
# Most values: a plain name or IPv4 address, and perhaps a port (one match).
_PLAIN = re.compile(rb"[A-Za-z0-9._~!$&'()*+,;=-]+(?::[0-9]*)?")
_IP_FUTURE = re.compile(rb"[vV][0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+")
_IPV6_CHARS = re.compile(rb"[0-9A-Fa-f:.]+")
_PORT = re.compile(rb"[0-9]*")


def authority_error(value: bytes) -> str | None:
    """
    Why C{value} is not C{host [ ":" port ]} (see the module docstring), in
    words that quote none of it; L{None} when it is.
    """
    if _PLAIN.fullmatch(value) is not None:
        return None
    if b"@" in value:
        return "userinfo"
    if value.startswith(b"["):
        end = value.find(b"]")
        if end < 0:
            return "an IP literal without its closing bracket"
        if not _ip_literal(value[1:end]):
            return "an invalid IP literal"
        rest = value[end + 1 :]
        if rest and not rest.startswith(b":"):
            return "bytes after an IP literal"
        port = rest[1:]
    else:
        host, _, port = value.partition(b":")
        if not host:
            return "an empty host"
        if _REG_NAME.fullmatch(host) is None:
            return "a character a host name cannot have"
    if _PORT.fullmatch(port) is None:
        return "a port that is not digits"
    return None


def _ip_literal(literal: bytes) -> bool:
    if literal[:1] in (b"v", b"V"):
        return _IP_FUTURE.fullmatch(literal) is not None
    # ipaddress also reads RFC 4007 zones ("%eth0"), which RFC 3986 has
    # not: only hex digits, colons and a dotted IPv4 tail are let through.
    if _IPV6_CHARS.fullmatch(literal) is None:
        return False
    try:
        ipaddress.IPv6Address(literal.decode("ascii"))
    except ValueError:
        return False
    return True
