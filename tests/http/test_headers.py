"""Tests for L{txlb.headers}."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txlb.http.headers import (
    TrustedProxies,
    connection_tokens,
    forwarded_chain,
    request_head,
)


def trust(*items: str) -> TrustedProxies:
    return TrustedProxies(ipaddress.ip_network(item) for item in items)


def head(headers: list[tuple[bytes, list[bytes]]], **kw: object) -> list[bytes]:
    args: dict[str, object] = {
        "method": b"GET",
        "uri": b"/p?q=1",
        "headers": headers,
        "client_ip": b"192.0.2.7",
        "proto": b"http",
        "body_length": 0,
        "default_host": b"",
    }
    args.update(kw)
    # request_head takes one (name, value) pair per header line.
    args["headers"] = [(name, value) for name, values in headers for value in values]
    raw = request_head(**args)  # type: ignore[arg-type]
    assert raw.endswith(b"\r\n\r\n")
    return raw[:-4].split(b"\r\n")


class RequestHeadTests(SynchronousTestCase):
    def test_request_line_and_host(self) -> None:
        """The request line is HTTP/1.1 and Host passes through unchanged."""
        lines = head([(b"Host", [b"example.com:8080"])])
        self.assertEqual(lines[0], b"GET /p?q=1 HTTP/1.1")
        self.assertIn(b"Host: example.com:8080", lines)
        self.assertIn(b"X-Forwarded-Host: example.com:8080", lines)

    def test_hop_by_hop_removed(self) -> None:
        """Hop-by-hop headers and those named in Connection are dropped."""
        lines = head(
            [
                (b"Host", [b"h"]),
                (b"Keep-Alive", [b"timeout=5"]),
                (b"Te", [b"trailers"]),
                (b"Proxy-Authorization", [b"secret"]),
                (b"Upgrade", [b"websocket"]),
                (b"X-Private", [b"1"]),
                (b"X-Kept", [b"2"]),
            ],
            drop=connection_tokens([b"keep-alive, X-Private"]),
        )
        text = b"\n".join(lines).lower()
        for name in (
            b"keep-alive",
            b"te:",
            b"proxy-authorization",
            b"upgrade",
            b"x-private",
        ):
            self.assertNotIn(name, text)
        self.assertIn(b"X-Kept: 2", lines)

    def test_forwarded_headers_untrusted(self) -> None:
        """
        From a peer that is not a trusted proxy, the forwarding headers are
        dropped and X-Forwarded-* describe the connection itself.
        """
        lines = head(
            [
                (b"Host", [b"h"]),
                (b"X-Forwarded-For", [b"10.0.0.1", b"10.0.0.2"]),
                (b"X-Forwarded-Proto", [b"gopher"]),
                (b"X-Forwarded-Host", [b"evil"]),
                (b"Forwarded", [b"for=10.0.0.1"]),
                (b"X-Real-IP", [b"10.0.0.1"]),
            ],
            proto=b"https",
        )
        self.assertIn(b"X-Forwarded-For: 192.0.2.7", lines)
        self.assertIn(b"X-Forwarded-Proto: https", lines)
        self.assertIn(b"X-Forwarded-Host: h", lines)
        self.assertEqual(sum(1 for line in lines if line.startswith(b"X-Forwarded")), 3)
        self.assertNotIn(b"10.0.0.1", b"\n".join(lines))
        self.assertNotIn(b"gopher", b"\n".join(lines))

    def test_forwarded_headers_trusted(self) -> None:
        """
        From a trusted proxy, X-Forwarded-For is appended to and its
        X-Forwarded-Proto/-Host, Forwarded and X-Real-IP pass.
        """
        lines = head(
            [
                (b"Host", [b"h"]),
                (b"X-Forwarded-For", [b"203.0.113.5"]),
                (b"X-Forwarded-Proto", [b"https"]),
                (b"X-Forwarded-Host", [b"shop.example"]),
                (b"Forwarded", [b"for=203.0.113.5;proto=https"]),
                (b"X-Real-IP", [b"203.0.113.5"]),
            ],
            client_ip=b"127.0.0.1",
            proto=b"http",
            trusted=trust("127.0.0.1"),
        )
        self.assertIn(b"X-Forwarded-For: 203.0.113.5, 127.0.0.1", lines)
        self.assertIn(b"X-Forwarded-Proto: https", lines)
        self.assertIn(b"X-Forwarded-Host: shop.example", lines)
        self.assertIn(b"Forwarded: for=203.0.113.5;proto=https", lines)
        self.assertIn(b"X-Real-IP: 203.0.113.5", lines)
        self.assertEqual(sum(1 for line in lines if line.startswith(b"X-Forwarded")), 3)

    def test_trusted_without_forwarding_headers(self) -> None:
        """A trusted proxy that sends no forwarding headers is the client."""
        lines = head(
            [(b"Host", [b"h"])],
            client_ip=b"127.0.0.1",
            trusted=trust("127.0.0.1"),
        )
        self.assertIn(b"X-Forwarded-For: 127.0.0.1", lines)
        self.assertIn(b"X-Forwarded-Proto: http", lines)
        self.assertIn(b"X-Forwarded-Host: h", lines)

    def test_trusted_spoof_dropped(self) -> None:
        """
        Addresses a client wrote left of its own are dropped even when a
        trusted proxy appended rather than replaced the header.
        """
        lines = head(
            [(b"Host", [b"h"]), (b"X-Forwarded-For", [b"1.2.3.4, 203.0.113.5"])],
            client_ip=b"127.0.0.1",
            trusted=trust("127.0.0.1"),
        )
        self.assertIn(b"X-Forwarded-For: 203.0.113.5, 127.0.0.1", lines)

    def test_connection_named_forwarding_header_dropped(self) -> None:
        """A forwarding header named in Connection is hop-by-hop, even trusted."""
        lines = head(
            [(b"Host", [b"h"]), (b"X-Real-IP", [b"203.0.113.5"])],
            client_ip=b"127.0.0.1",
            trusted=trust("127.0.0.1"),
            drop=connection_tokens([b"X-Real-IP"]),
        )
        self.assertNotIn(b"X-Real-IP", b"\n".join(lines))

    def test_framing_once(self) -> None:
        """The client's framing headers are replaced by the proxy's own."""
        client = [
            (b"Host", [b"h"]),
            (b"Content-Length", [b"5"]),
            (b"Transfer-Encoding", [b"chunked"]),
        ]
        chunked = head(client, method=b"POST", body_length=None)
        self.assertIn(b"Transfer-Encoding: chunked", chunked)
        self.assertFalse(
            [line for line in chunked if line.startswith(b"Content-Length")]
        )
        sized = head(client, method=b"POST", body_length=5)
        self.assertIn(b"Content-Length: 5", sized)
        self.assertFalse(
            [line for line in sized if line.startswith(b"Transfer-Encoding")]
        )
        empty_post = head([(b"Host", [b"h"])], method=b"POST", body_length=0)
        self.assertIn(b"Content-Length: 0", empty_post)
        get = head([(b"Host", [b"h"])])
        self.assertFalse(
            [line for line in get if line.startswith((b"Content-Length", b"Transfer"))]
        )

    def test_http10_without_host(self) -> None:
        """An HTTP/1.0 request without Host gets the default host."""
        lines = head([], default_host=b"127.0.0.1")
        self.assertIn(b"Host: 127.0.0.1", lines)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        b"Connection",
                        b"Keep-Alive",
                        b"X-A",
                        b"Host",
                        b"Te",
                        b"X-Forwarded-For",
                        b"Transfer-Encoding",
                        b"Content-Length",
                        b"Upgrade",
                        b"Accept",
                    ]
                ),
                st.lists(
                    st.binary(min_size=1, max_size=8).filter(
                        lambda v: b"\r" not in v and b"\n" not in v
                    ),
                    min_size=1,
                    max_size=2,
                ),
            ),
            max_size=8,
        ),
        st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
    )
    def test_fuzz_framing(
        self, headers: list[tuple[bytes, list[bytes]]], length: int | None
    ) -> None:
        """Whatever the client sends, exactly one framing header (or none) goes out."""
        lines = head(headers, method=b"PUT", body_length=length)
        framing = [
            line
            for line in lines
            if line.lower().startswith((b"content-length:", b"transfer-encoding:"))
        ]
        self.assertEqual(len(framing), 1)
        hop = [
            line
            for line in lines
            if line.lower().startswith(
                (b"connection:", b"keep-alive:", b"te:", b"upgrade:")
            )
        ]
        self.assertEqual(hop, [])
        self.assertEqual(
            sum(1 for line in lines if line.startswith(b"X-Forwarded-For:")), 1
        )


class TrustedProxiesTests(SynchronousTestCase):
    def test_membership(self) -> None:
        """Single addresses and networks of both families are matched."""
        trusted = trust("127.0.0.1", "10.0.0.0/8", "2001:db8::/32")
        self.assertIn("127.0.0.1", trusted)
        self.assertIn("10.200.0.9", trusted)
        self.assertIn("2001:db8::5", trusted)
        self.assertNotIn("127.0.0.2", trusted)
        self.assertNotIn("11.0.0.1", trusted)
        self.assertNotIn("::1", trusted)
        self.assertNotIn("", trusted)
        self.assertNotIn("not-an-address", trusted)

    def test_ipv4_mapped(self) -> None:
        """An IPv4-mapped IPv6 peer (a tcp6: listener) matches its IPv4 network."""
        self.assertIn("::ffff:127.0.0.1", trust("127.0.0.0/8"))

    def test_empty_trusts_nobody(self) -> None:
        """No networks: nothing is trusted, and the object is false."""
        trusted = trust()
        self.assertFalse(trusted)
        self.assertNotIn("127.0.0.1", trusted)

    def test_cache_bounded(self) -> None:
        """Answers are cached, but the cache never grows past its bound."""
        trusted = trust("10.0.0.0/8")
        for i in range(TrustedProxies._CACHE_SIZE + 10):
            self.assertIn(f"10.0.{i // 256}.{i % 256}", trusted)
        self.assertLessEqual(len(trusted._cache), TrustedProxies._CACHE_SIZE)
        self.assertIn("10.0.0.1", trusted)
        self.assertNotIn("192.0.2.1", trusted)


class ForwardedChainTests(SynchronousTestCase):
    def chain(self, *values: bytes, peer: bytes = b"127.0.0.1") -> list[bytes]:
        return forwarded_chain(list(values), peer, trust("127.0.0.1", "10.0.0.0/8"))

    def test_client_then_peer(self) -> None:
        """The client the trusted proxy saw comes first, the proxy last."""
        self.assertEqual(self.chain(b"203.0.113.5"), [b"203.0.113.5", b"127.0.0.1"])

    def test_rightmost_untrusted_is_the_client(self) -> None:
        """Trusted hops are kept; left of the first untrusted address is dropped."""
        self.assertEqual(
            self.chain(b"6.6.6.6, 203.0.113.5", b"10.1.1.1, 10.2.2.2"),
            [b"203.0.113.5", b"10.1.1.1", b"10.2.2.2", b"127.0.0.1"],
        )

    def test_all_trusted(self) -> None:
        """When every hop is trusted the whole chain is kept."""
        self.assertEqual(
            self.chain(b"10.1.1.1,10.2.2.2"), [b"10.1.1.1", b"10.2.2.2", b"127.0.0.1"]
        )

    def test_garbage_ends_the_walk(self) -> None:
        """An entry that is not an address is dropped with all left of it."""
        self.assertEqual(
            self.chain(b"203.0.113.5, unknown, 10.1.1.1"), [b"10.1.1.1", b"127.0.0.1"]
        )
        self.assertEqual(self.chain(b"\xff\xfe"), [b"127.0.0.1"])

    def test_ports_and_brackets(self) -> None:
        """Entries with ports and bracketed IPv6 addresses are understood."""
        self.assertEqual(
            self.chain(b"1.1.1.1, [2001:db8::1]:443, 10.0.0.1:80"),
            [b"[2001:db8::1]:443", b"10.0.0.1:80", b"127.0.0.1"],
        )
        self.assertEqual(self.chain(b"2001:db8::1"), [b"2001:db8::1", b"127.0.0.1"])

    def test_empty(self) -> None:
        """Empty values and stray commas leave just the peer."""
        self.assertEqual(self.chain(b"", b" , "), [b"127.0.0.1"])

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.ip_addresses().map(lambda a: str(a).encode()),
                st.binary(max_size=6).filter(lambda v: b"," not in v),
            ),
            max_size=6,
        )
    )
    def test_fuzz_first_is_untrusted_or_all_trusted(self, entries: list[bytes]) -> None:
        """
        Whatever was sent, the result ends with the peer, is a suffix of what
        was sent, and everything after its first entry is trusted.
        """
        result = self.chain(b", ".join(entries))
        self.assertEqual(result[-1], b"127.0.0.1")
        sent = [e.strip() for e in b", ".join(entries).split(b",") if e.strip()]
        self.assertEqual(sent[len(sent) - len(result) + 1 :], result[:-1])
        trusted = trust("127.0.0.1", "10.0.0.0/8")
        for entry in result[1:-1]:
            self.assertIn(entry.decode(), trusted)
