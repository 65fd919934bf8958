"""
PROXY protocol headers, version 1 (text) and version 2 (binary), as defined
by HAProxy's specification (doc/proxy-protocol.txt).

In TCP mode a backend configured with C{proxy_protocol = v1} or C{v2} gets
one of these headers before the client's first byte, so it sees the
client's address instead of the balancer's.  Pure: addresses in, bytes out.
"""

from __future__ import annotations

import ipaddress
import struct

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress

__all__ = ["V2_SIGNATURE", "VERSIONS", "header", "v1", "v2"]

VERSIONS = ("none", "v1", "v2")

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""The twelve bytes every version 2 header starts with."""

_V2_PROXY = 0x21  # version 2, command PROXY
_V2_LOCAL = 0x20  # version 2, command LOCAL
_V2_TCP4 = 0x11  # AF_INET, SOCK_STREAM
_V2_TCP6 = 0x21  # AF_INET6, SOCK_STREAM
_V2_UNSPEC = 0x00

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(address: IAddress) -> tuple[_IP, int] | None:
    if not isinstance(address, IPv4Address | IPv6Address):
        return None
    host = address.host.split("%", 1)[0]  # an IPv6 scope means nothing remotely
    try:
        return ipaddress.ip_address(host), address.port
    except ValueError:
        return None


def _pair(
    source: IAddress, destination: IAddress
) -> tuple[int, tuple[_IP, int], tuple[_IP, int]] | None:
    """
    Both ends as IP addresses of one family (4 or 6), or L{None} if either
    is not an IP address.  An IPv4 end paired with an IPv6 one is written
    as an IPv4-mapped IPv6 address, as HAProxy does.
    """
    src, dst = _ip(source), _ip(destination)
    if src is None or dst is None:
        return None
    if src[0].version == dst[0].version:
        return src[0].version, src, dst

    def six(end: tuple[_IP, int]) -> tuple[_IP, int]:
        ip, port = end
        if isinstance(ip, ipaddress.IPv4Address):
            return ipaddress.IPv6Address(f"::ffff:{ip}"), port
        return ip, port

    return 6, six(src), six(dst)


def v1(source: IAddress, destination: IAddress) -> bytes:
    """
    A version 1 header: C{PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n}, or
    C{PROXY UNKNOWN\\r\\n} when the addresses are not both IP addresses.

    @param source: the client's address (the peer of the accepted
        connection).
    @param destination: the address the client connected to (its host).
    """
    pair = _pair(source, destination)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    version, (sip, sport), (dip, dport) = pair
    return f"PROXY TCP{version} {sip} {dip} {sport} {dport}\r\n".encode("ascii")


def v2(source: IAddress, destination: IAddress) -> bytes:
    """
    A version 2 header: the signature, C{PROXY} over C{TCP4} or C{TCP6} with
    both addresses and ports, no TLVs; or a C{LOCAL} command with no
    addresses when they are not both IP addresses.
    """
    pair = _pair(source, destination)
    if pair is None:
        return V2_SIGNATURE + struct.pack("!BBH", _V2_LOCAL, _V2_UNSPEC, 0)
    version, (sip, sport), (dip, dport) = pair
    body = sip.packed + dip.packed + struct.pack("!HH", sport, dport)
    family = _V2_TCP4 if version == 4 else _V2_TCP6
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, family, len(body)) + body


def header(version: str, source: IAddress, destination: IAddress) -> bytes:
    """
    The header for a backend's C{proxy_protocol} setting: empty for
    C{none}.

    @raise ValueError: for a version not in L{VERSIONS}.
    """
    if version == "v1":
        return v1(source, destination)
    if version == "v2":
        return v2(source, destination)
    if version == "none":
        return b""
    raise ValueError(f"unknown PROXY protocol version {version!r}")
