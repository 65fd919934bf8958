"""
Tests for L{txlb.proxyproto}: header bytes checked byte for byte against
HAProxy's PROXY protocol specification (doc/proxy-protocol.txt).
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from txlb.tcp.proxyproto import V2_SIGNATURE, header, v1, v2

CLIENT4 = IPv4Address("TCP", "192.168.0.1", 56324)
SERVER4 = IPv4Address("TCP", "192.168.0.11", 443)
CLIENT6 = IPv6Address("TCP", "2001:db8::1", 56324)
SERVER6 = IPv6Address("TCP", "2001:db8::11", 443)


class V1Tests(SynchronousTestCase):
    def test_tcp4(self) -> None:
        """IPv4 ends give the specification's own example line."""
        self.assertEqual(
            v1(CLIENT4, SERVER4),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        )

    def test_tcp6(self) -> None:
        """IPv6 ends are written in their compressed text form with TCP6."""
        self.assertEqual(
            v1(CLIENT6, SERVER6),
            b"PROXY TCP6 2001:db8::1 2001:db8::11 56324 443\r\n",
        )

    def test_scope_dropped(self) -> None:
        """A link-local scope (%eth0) is local only and is not sent."""
        self.assertEqual(
            v1(IPv6Address("TCP", "fe80::1%eth0", 1), IPv6Address("TCP", "fe80::2", 2)),
            b"PROXY TCP6 fe80::1 fe80::2 1 2\r\n",
        )

    def test_mixed_families(self) -> None:
        """An IPv4 client on an IPv6 listener is sent as IPv4-mapped IPv6."""
        self.assertEqual(
            v1(CLIENT4, SERVER6),
            b"PROXY TCP6 ::ffff:c0a8:1 2001:db8::11 56324 443\r\n",
        )

    def test_unknown(self) -> None:
        """A client on a UNIX socket gives PROXY UNKNOWN."""
        self.assertEqual(
            v1(UNIXAddress("/run/x.sock"), UNIXAddress("/run/x.sock")),
            b"PROXY UNKNOWN\r\n",
        )

    def test_longest_fits(self) -> None:
        """The longest possible line stays within the 107 bytes allowed."""
        end = IPv6Address("TCP", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)
        line = v1(end, end)
        self.assertEqual(len(line), 104)
        self.assertLessEqual(len(line), 107)


class V2Tests(SynchronousTestCase):
    def test_signature(self) -> None:
        """The signature is the twelve bytes the specification lists."""
        self.assertEqual(
            V2_SIGNATURE,
            bytes.fromhex("0D0A0D0A000D0A515549540A"),
        )

    def test_tcp4(self) -> None:
        """PROXY over TCP4: 0x21, 0x11, length 12, addresses, then ports."""
        self.assertEqual(
            v2(CLIENT4, SERVER4),
            bytes.fromhex(
                "0D0A0D0A000D0A515549540A"  # signature
                "21"  # version 2, PROXY
                "11"  # AF_INET, STREAM
                "000C"  # 12 bytes follow
                "C0A80001"  # 192.168.0.1
                "C0A8000B"  # 192.168.0.11
                "DC04"  # 56324
                "01BB"  # 443
            ),
        )

    def test_tcp6(self) -> None:
        """PROXY over TCP6: 0x21, 0x21, length 36, addresses, then ports."""
        self.assertEqual(
            v2(CLIENT6, SERVER6),
            bytes.fromhex(
                "0D0A0D0A000D0A515549540A"
                "21"
                "21"  # AF_INET6, STREAM
                "0024"  # 36 bytes follow
                "20010DB8000000000000000000000001"
                "20010DB8000000000000000000000011"
                "DC04"
                "01BB"
            ),
        )

    def test_unknown_is_local(self) -> None:
        """Non-IP ends give a LOCAL command with UNSPEC family and no body."""
        self.assertEqual(
            v2(UNIXAddress("/run/x.sock"), UNIXAddress("/run/x.sock")),
            bytes.fromhex(
                "0D0A0D0A000D0A515549540A"
                "20"  # version 2, LOCAL
                "00"  # AF_UNSPEC, UNSPEC
                "0000"  # nothing follows
            ),
        )

    def test_length_field_counts_body(self) -> None:
        """The length field is exactly the number of bytes after the 16-byte
        fixed part, so a receiver can skip the header."""
        for src, dst in ((CLIENT4, SERVER4), (CLIENT6, SERVER6), (CLIENT4, SERVER6)):
            data = v2(src, dst)
            self.assertEqual(int.from_bytes(data[14:16], "big"), len(data) - 16)


class HeaderTests(SynchronousTestCase):
    def test_dispatch(self) -> None:
        """header() picks the version by the configured name; none is empty."""
        self.assertEqual(header("none", CLIENT4, SERVER4), b"")
        self.assertEqual(header("v1", CLIENT4, SERVER4), v1(CLIENT4, SERVER4))
        self.assertEqual(header("v2", CLIENT4, SERVER4), v2(CLIENT4, SERVER4))
        self.assertRaises(ValueError, header, "v3", CLIENT4, SERVER4)
