"""
L{txlb.http.authority.authority_error}: RFC 3986's C{host [ ":" port ]},
without userinfo, as tables and as hypothesis properties.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txlb.http.authority import authority_error

VALID = [
    b"example.com",
    b"example.com:8080",
    b"EXAMPLE.com",
    b"a",
    b"localhost:",  # port = *DIGIT: an empty port is allowed
    b"127.0.0.1",
    b"127.0.0.1:80",
    b"999.1.1.1",  # no IPv4address, but a reg-name
    b"xn--bcher-kva.example",
    b"caf%C3%A9.example",  # pct-encoded
    b"a-b_c~d.e",
    b"!$&'()*+,;=",  # sub-delims
    b"[::1]",
    b"[::1]:443",
    b"[2001:db8::7]",
    b"[::ffff:192.0.2.1]",
    b"[1:2:3:4:5:6:7:8]",
    b"[v1.fe80::a+en1]",  # IPvFuture
    b"[V7.x:y]",
]

INVALID = [
    (b"a b", "a character a host name cannot have"),
    (b"a\tb", "a character a host name cannot have"),
    (b"caf\xc3\xa9.example", "a character a host name cannot have"),
    (b"\xff", "a character a host name cannot have"),
    (b"evil.example/x@a", "userinfo"),
    (b"user@example.com", "userinfo"),
    (b"user:pass@example.com", "userinfo"),
    (b"example.com/path", "a character a host name cannot have"),
    (b"example.com?q", "a character a host name cannot have"),
    (b"example.com#f", "a character a host name cannot have"),
    (b"a\\b", "a character a host name cannot have"),
    (b'a"b', "a character a host name cannot have"),
    (b"a<b>", "a character a host name cannot have"),
    (b"a%zz", "a character a host name cannot have"),
    (b"a%4", "a character a host name cannot have"),
    (b"a:b", "a port that is not digits"),
    (b"a:80:80", "a port that is not digits"),
    (b"a:-1", "a port that is not digits"),
    (b"a: 80", "a port that is not digits"),
    (b":80", "an empty host"),
    (b":", "an empty host"),
    (b"", "an empty host"),
    (b"[::1", "an IP literal without its closing bracket"),
    (b"[]", "an invalid IP literal"),
    (b"[::1::2]", "an invalid IP literal"),
    (b"[1:2:3:4:5:6:7:8:9]", "an invalid IP literal"),
    (b"[fe80::1%eth0]", "an invalid IP literal"),  # RFC 4007 zone
    (b"[fe80::1%25eth0]", "an invalid IP literal"),  # RFC 6874: not 3986's
    (b"[127.0.0.1]", "an invalid IP literal"),
    (b"[example.com]", "an invalid IP literal"),
    (b"[v1]", "an invalid IP literal"),
    (b"[v.x]", "an invalid IP literal"),
    (b"[vg.x]", "an invalid IP literal"),
    (b"[v1.]", "an invalid IP literal"),
    (b"[::1]x", "bytes after an IP literal"),
    (b"[::1]:8x", "a port that is not digits"),
    (b"[::1]]", "bytes after an IP literal"),
    (b"[\xff::1]", "an invalid IP literal"),
]

UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
SUB_DELIMS = "!$&'()*+,;="
# Every byte an authority can hold somewhere (reg-name, IP literal, port).
ALPHABET = set((UNRESERVED + SUB_DELIMS + "%:[]").encode())

reg_names = st.lists(
    st.one_of(
        st.sampled_from(UNRESERVED + SUB_DELIMS),
        st.integers(0, 255).map(lambda b: f"%{b:02X}"),
        st.integers(0, 255).map(lambda b: f"%{b:02x}"),
    ),
    min_size=1,
    max_size=20,
).map("".join)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).flatmap(
    lambda n: st.sampled_from(
        [ipaddress.IPv6Address(n).compressed, ipaddress.IPv6Address(n).exploded]
    )
)
ipv4_mapped = ipv4.map(lambda a: f"::ffff:{a}")
ip_future = st.tuples(
    st.text("0123456789abcdefABCDEF", min_size=1, max_size=4),
    st.text(UNRESERVED + SUB_DELIMS + ":", min_size=1, max_size=12),
).map(lambda t: f"v{t[0]}.{t[1]}")
hosts = st.one_of(
    reg_names,
    ipv4,
    st.one_of(ipv6, ipv4_mapped, ip_future).map(lambda a: f"[{a}]"),
)
authorities = st.tuples(
    hosts, st.one_of(st.just(""), st.text("0123456789", max_size=6).map(":".__add__))
).map(lambda t: (t[0] + t[1]).encode("ascii"))


class AuthorityTableTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """Each form RFC 3986 allows (reg-name, IPv4, IP-literal, port) passes."""
        for value in VALID:
            self.assertIsNone(authority_error(value), value)

    def test_invalid(self) -> None:
        """Each malformed authority is refused, with its reason in words."""
        for value, why in INVALID:
            self.assertEqual(authority_error(value), why, value)

    def test_reason_quotes_nothing(self) -> None:
        """The reason never carries the client's bytes."""
        self.assertEqual(
            authority_error(b"x\r\nInjected: 1"), "a character a host name cannot have"
        )


class AuthorityPropertyTests(SynchronousTestCase):
    @given(authorities)
    def test_grammar_accepted(self, value: bytes) -> None:
        """Any authority built from RFC 3986's grammar is accepted."""
        self.assertIsNone(authority_error(value), value)

    @given(authorities, st.data())
    def test_a_foreign_byte_refuses(self, value: bytes, data: st.DataObject) -> None:
        """
        A byte no authority can hold (space, controls, C{@}, C{/}, C{?},
        C{#}, anything above 0x7F, ...), put anywhere in a valid one, makes
        it invalid.
        """
        foreign = data.draw(st.integers(0, 255).filter(lambda b: b not in ALPHABET))
        at = data.draw(st.integers(0, len(value)))
        bad = value[:at] + bytes([foreign]) + value[at:]
        self.assertIsNotNone(authority_error(bad), bad)

    @given(st.binary(max_size=30))
    def test_accepted_means_alphabet(self, value: bytes) -> None:
        """Whatever is accepted holds only authority bytes and a host."""
        if authority_error(value) is None:
            self.assertTrue(set(value) <= ALPHABET, value)
            self.assertFalse(value.startswith(b":"), value)
