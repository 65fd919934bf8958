"""
L{txlb.discovery.dns}: what a DNS answer means, through an in-memory
C{IResolver} (twisted.names' C{ResolverBase}); the real resolver against
dnsmasq is in C{tests/integration/test_discovery_dns.py}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IResolver
from twisted.names import dns, error
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.discovery.doubles import FakeResolver, a, section, srv
from txlb.discovery.dns import DNSSource, srv_weights
from txlb.discovery.source import Answer, IDiscoverySource, LookupFailed
from txlb.schema import Address


def plain(resolver: FakeResolver, port: int = 8080) -> DNSSource:
    _, config = section(
        f"[discovery:web]\ntype = dns\nname = web.lb.test\nport = {port}\n"
    )
    assert config.dns is not None
    return DNSSource(config.dns, port, resolver)


def service(resolver: FakeResolver) -> DNSSource:
    _, config = section("[discovery:web]\ntype = dns\nname = _web._tcp.lb.test\n")
    assert config.dns is not None
    return DNSSource(config.dns, 0, resolver)


class DNSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.resolver = FakeResolver()
        verifyObject(IResolver, self.resolver)

    def answer(self, source: DNSSource) -> Answer:
        verifyObject(IDiscoverySource, source)
        return self.successResultOf(source.lookup())

    def failed(self, source: DNSSource) -> str:
        failure = self.failureResultOf(source.lookup(), LookupFailed)
        return failure.getErrorMessage()

    def found(self, answer: Answer) -> list[tuple[str, Any, int]]:
        return [(str(f.address), f.weight, f.priority) for f in answer.found]

    def test_a_and_aaaa(self) -> None:
        """A and AAAA records, each on the section's port; the smallest TTL."""
        self.resolver.set(
            "web.lb.test",
            a("web.lb.test", "10.0.0.2", 9),
            a("web.lb.test", "10.0.0.1", 5),
            a("web.lb.test", "2001:db8::1", 7),
        )
        answer = self.answer(plain(self.resolver))
        self.assertEqual(
            self.found(answer),
            [
                ("10.0.0.1:8080", None, 0),
                ("10.0.0.2:8080", None, 0),
                ("[2001:db8::1]:8080", None, 0),
            ],
        )
        self.assertEqual(answer.ttl, 5.0)
        self.assertEqual(answer.words, "web.lb.test: 3 addresses, ttl 5s")
        self.assertEqual(
            sorted(self.resolver.asked),
            [("web.lb.test", dns.A), ("web.lb.test", dns.AAAA)],
        )

    def test_nxdomain_is_empty(self) -> None:
        """NXDOMAIN: an authoritative empty answer."""
        answer = self.answer(plain(self.resolver))
        self.assertEqual((answer.found, answer.words), ((), "web.lb.test: NXDOMAIN"))

    def test_no_records_is_empty(self) -> None:
        """A name with no A or AAAA (NODATA): empty too."""
        self.resolver.set("web.lb.test")
        self.assertEqual(
            self.answer(plain(self.resolver)).words, "web.lb.test: no address"
        )

    def test_failures(self) -> None:
        """SERVFAIL, REFUSED, a timeout: failed lookups, in words."""
        for kind, words in (
            (error.DNSServerError, "web.lb.test: SERVFAIL"),
            (error.DNSQueryRefusedError, "web.lb.test: REFUSED"),
            (error.DNSQueryTimeoutError, "web.lb.test: no answer in 4s"),
        ):
            self.resolver.set("web.lb.test", a("web.lb.test", "10.0.0.1"))
            self.resolver.records[("web.lb.test", dns.AAAA)] = kind
            self.assertEqual(self.failed(plain(self.resolver)), words)

    def test_srv(self) -> None:
        """
        SRV: targets from the additional section or asked; the record's port,
        priority and weight.
        """
        name = "_web._tcp.lb.test"
        self.resolver.set(
            name,
            srv(name, "a.lb.test", 9001, 0, 30, ttl=8),
            srv(name, "b.lb.test", 9002, 0, 10),
            srv(name, "c.lb.test", 9003, 1, 5),
        )
        self.resolver.extra[name] = [a("a.lb.test", "10.0.0.1", 6)]
        self.resolver.set("b.lb.test", a("b.lb.test", "10.0.0.2", 3))
        self.resolver.set("c.lb.test", a("c.lb.test", "10.0.0.3"))
        answer = self.answer(service(self.resolver))
        self.assertEqual(
            self.found(answer),
            [
                ("10.0.0.1:9001", 30.0, 0),
                ("10.0.0.2:9002", 10.0, 0),
                ("10.0.0.3:9003", 5.0, 1),
            ],
        )
        self.assertEqual(answer.ttl, 3.0)
        self.assertEqual(answer.words, f"{name}: 3 SRV records, 3 addresses, ttl 3s")
        self.assertNotIn(("a.lb.test", dns.A), self.resolver.asked)

    def test_srv_no_service(self) -> None:
        """A target of "." (RFC 2782: decidedly not available) and NXDOMAIN: empty."""
        name = "_web._tcp.lb.test"
        self.assertEqual(self.answer(service(self.resolver)).words, f"{name}: NXDOMAIN")
        self.resolver.set(name, srv(name, "", 0))  # the root, "."
        self.assertEqual(
            self.answer(service(self.resolver)).words, f"{name}: no service"
        )

    def test_srv_target_failure_fails_lookup(self) -> None:
        """A target that cannot be resolved (SERVFAIL): nothing is known."""
        name = "_web._tcp.lb.test"
        self.resolver.set(name, srv(name, "a.lb.test", 9001))
        self.resolver.records[("a.lb.test", dns.A)] = error.DNSServerError
        self.assertEqual(self.failed(service(self.resolver)), "a.lb.test: SERVFAIL")

    def test_srv_target_with_two_addresses_splits_weight(self) -> None:
        name = "_web._tcp.lb.test"
        self.resolver.set(name, srv(name, "a.lb.test", 9001, 0, 10))
        self.resolver.set(
            "a.lb.test", a("a.lb.test", "10.0.0.1"), a("a.lb.test", "10.0.0.2")
        )
        answer = self.answer(service(self.resolver))
        self.assertEqual([f.weight for f in answer.found], [5.0, 5.0])

    def test_srv_weights(self) -> None:
        """RFC 2782 shares per priority: 0 is very small, >1000 scaled down."""
        self.assertEqual(srv_weights([(0, 10), (0, 30), (1, 0)]), [10.0, 30.0, 1.0])
        self.assertEqual(srv_weights([(0, 0), (0, 0)]), [1.0, 1.0])
        self.assertEqual(srv_weights([(0, 0), (0, 50)]), [0.5, 50.0])
        self.assertEqual(srv_weights([(0, 65535), (0, 6553.5)]), [1000.0, 100.0])

    def test_query_words(self) -> None:
        self.assertEqual(
            plain(self.resolver).query, "A/AAAA web.lb.test via the system's resolvers"
        )
        _, config = section(
            "[discovery:web]\ntype = dns\nname = _x._tcp.lb.test\n"
            "resolvers = 127.0.0.1:5353\n"
        )
        assert config.dns is not None
        source = DNSSource(config.dns, 0, self.resolver)
        self.assertEqual(source.query, "SRV _x._tcp.lb.test via 127.0.0.1:5353")
        self.assertEqual(Address("::1", 53).__str__(), "[::1]:53")
