"""
Properties of the request head txlb sends a backend (L{txlb.headers}), for
arbitrary client header lists (issue 8).

Names are drawn from the token characters and from every hop-by-hop,
framing and forwarding name in any letter case; values from the visible
characters (what a strict front end lets through), sometimes a list of
header names for C{Connection}.  The client sends at most one C{Host}: two
are rejected by the front end with 400 before a head is built
(C{tests/integration/test_hostile.py}, case C{two-hosts}).
"""

from __future__ import annotations

import ipaddress
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txlb.http.headers import (
    FORWARDING,
    HOP_BY_HOP,
    TrustedProxies,
    connection_tokens,
    request_head,
)

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
SPECIAL = sorted(
    HOP_BY_HOP | FORWARDING | {b"content-length", b"host", b"x-private", b"accept"}
)
# What txlb itself writes into every head, whatever the client's Connection says.
OWN = {
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"content-length",
    b"transfer-encoding",
}
PEER = b"192.0.2.7"


def _any_case(name: bytes) -> st.SearchStrategy[bytes]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: bytes(
            c - 32 if u and 97 <= c <= 122 else c
            for c, u in zip(name, upper, strict=True)
        )
    )


names = st.one_of(
    st.sampled_from(SPECIAL).flatmap(_any_case),
    st.text(alphabet=TCHAR, min_size=1, max_size=12).map(str.encode),
)
visible = st.binary(max_size=16).map(lambda b: bytes(0x21 + c % 94 for c in b))
connection_lists = st.lists(names, min_size=1, max_size=3).map(b", ".join)
values = st.one_of(visible, connection_lists)
header_lists = st.lists(st.tuples(names, values), max_size=12).filter(
    lambda hs: sum(1 for n, _ in hs if n.lower() == b"host") <= 1
)
methods = st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE"])
lengths = st.one_of(st.none(), st.integers(min_value=0, max_value=2**63))
trust_peer = st.booleans()


def build(
    headers: list[tuple[bytes, bytes]],
    method: bytes = b"GET",
    body_length: int | None = 0,
    trusted: bool = False,
    default_host: bytes = b"",
) -> tuple[bytes, frozenset[bytes]]:
    """The head for C{headers}, and the names their Connection drops (as the proxy)."""
    drop = connection_tokens(v for n, v in headers if n.lower() == b"connection")
    proxies = TrustedProxies([ipaddress.ip_network("192.0.2.0/24")])
    head = request_head(
        method,
        b"/p?q=1",
        headers,
        PEER,
        b"http",
        body_length,
        default_host,
        drop,
        proxies if trusted else None,
    )
    return head, drop


def lines_of(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n"), head
    return head[:-4].split(b"\r\n")


def fields(head: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (name.lower(), value)
        for name, _, value in (line.partition(b": ") for line in lines_of(head)[1:])
    ]


class RequestHeadPropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(header_lists, methods, lengths, trust_peer)
    def test_well_formed(
        self,
        headers: list[tuple[bytes, bytes]],
        method: bytes,
        length: int | None,
        trusted: bool,
    ) -> None:
        """
        The head is one HTTP/1.1 request line and header lines, each a
        token name, exactly one C{": "} and a value, with no CR or LF
        inside any line; it ends with an empty line.
        """
        head, _ = build(headers, method, length, trusted, default_host=b"10.0.0.1")
        lines = lines_of(head)
        self.assertEqual(lines[0], method + b" /p?q=1 HTTP/1.1")
        for line in lines:
            self.assertNotIn(b"\r", line)
            self.assertNotIn(b"\n", line)
        for line in lines[1:]:
            self.assertEqual(line.count(b": "), 1, line)
            name = line.partition(b": ")[0]
            self.assertRegex(name, TOKEN)

    @settings(max_examples=300, deadline=None)
    @given(header_lists, methods, lengths, trust_peer)
    def test_no_hop_by_hop(
        self,
        headers: list[tuple[bytes, bytes]],
        method: bytes,
        length: int | None,
        trusted: bool,
    ) -> None:
        """
        No hop-by-hop header reaches the backend (Transfer-Encoding only as
        txlb's own chunked framing), nor any header the client's Connection
        names, except those txlb writes itself.  (An Upgrade request keeps
        C{Upgrade} and C{Connection}: httpproxy adds them after this head.)
        """
        head, drop = build(headers, method, length, trusted)
        for name, value in fields(head):
            if name == b"transfer-encoding":
                self.assertEqual(value, b"chunked")
                continue
            self.assertNotIn(name, HOP_BY_HOP)
            if name in drop:
                self.assertIn(name, OWN)

    @settings(max_examples=300, deadline=None)
    @given(header_lists, methods, lengths, trust_peer)
    def test_framed_once(
        self,
        headers: list[tuple[bytes, bytes]],
        method: bytes,
        length: int | None,
        trusted: bool,
    ) -> None:
        """
        At most one framing header, and it is the body length given: chunked
        for L{None}, C{Content-Length: N} for N > 0, and for an empty body
        none, or C{Content-Length: 0} for POST, PUT and PATCH.
        """
        head, _ = build(headers, method, length, trusted)
        framing = [
            (n, v)
            for n, v in fields(head)
            if n in (b"content-length", b"transfer-encoding")
        ]
        if length is None:
            self.assertEqual(framing, [(b"transfer-encoding", b"chunked")])
        elif length or method in (b"POST", b"PUT", b"PATCH"):
            self.assertEqual(framing, [(b"content-length", b"%d" % length)])
        else:
            self.assertEqual(framing, [])

    @settings(max_examples=300, deadline=None)
    @given(header_lists, methods, lengths)
    def test_untrusted_forwarding(
        self,
        headers: list[tuple[bytes, bytes]],
        method: bytes,
        length: int | None,
    ) -> None:
        """
        From an untrusted peer, X-Forwarded-For is exactly the peer, the
        other X-Forwarded-* headers are txlb's, and no forwarding header the
        client wrote survives.
        """
        head, _ = build(headers, method, length, trusted=False)
        got = fields(head)
        self.assertEqual([v for n, v in got if n == b"x-forwarded-for"], [PEER])
        self.assertEqual([v for n, v in got if n == b"x-forwarded-proto"], [b"http"])
        hosts = [v for n, v in got if n == b"host"]
        self.assertEqual([v for n, v in got if n == b"x-forwarded-host"], hosts[:1])
        self.assertEqual([n for n, _ in got if n in (b"forwarded", b"x-real-ip")], [])

    @settings(max_examples=300, deadline=None)
    @given(header_lists, methods, lengths)
    def test_trusted_forwarded_for_ends_with_peer(
        self,
        headers: list[tuple[bytes, bytes]],
        method: bytes,
        length: int | None,
    ) -> None:
        """From a trusted peer there is one X-Forwarded-For, ending with the peer."""
        head, _ = build(headers, method, length, trusted=True)
        [xff] = [v for n, v in fields(head) if n == b"x-forwarded-for"]
        self.assertEqual(xff.split(b", ")[-1], PEER)

    @settings(max_examples=300, deadline=None)
    @given(header_lists, methods, lengths, trust_peer)
    def test_host_passes_unchanged(
        self,
        headers: list[tuple[bytes, bytes]],
        method: bytes,
        length: int | None,
        trusted: bool,
    ) -> None:
        """
        Exactly one Host reaches the backend: the client's, unchanged, or
        the default (the address connected to) when it sent none.
        """
        client_hosts = [v for n, v in headers if n.lower() == b"host"]
        head, _ = build(headers, method, length, trusted, default_host=b"10.0.0.1")
        hosts = [v for n, v in fields(head) if n == b"host"]
        self.assertEqual(hosts, client_hosts or [b"10.0.0.1"])


# Found by test_host_passes_unchanged, and fixed.


def test_empty_host_sent_once() -> None:
    """
    An HTTP/1.1 client whose target has no authority MUST send an empty
    Host (RFC 9112 3.2); the backend must get it once, not twice.
    """
    head, _ = build([(b"Host", b"")])
    assert [v for n, v in fields(head) if n == b"host"] == [b""]


def test_connection_cannot_drop_host() -> None:
    """
    C{Connection: host} must not take the client's Host away from the
    backend (the README: Host is passed unchanged).
    """
    head, _ = build([(b"Host", b"h.example"), (b"Connection", b"host")])
    assert [v for n, v in fields(head) if n == b"host"] == [b"h.example"]
