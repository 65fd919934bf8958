"""
The C{[discovery:NAME]} sections (L{txlb.discovery.config}, wired into
L{txlb.config.parse}) and the names of the backends they find
(L{txlb.discovery.naming}).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txlb.config import ConfigError, parse, valid_name
from txlb.discovery.naming import backend_name
from txlb.schema import Address

DNS = "[discovery:web]\ntype = dns\nname = web.lb.test\nport = 8080\n"
SRV = "[discovery:web]\ntype = dns\nname = _web._tcp.lb.test\n"
EC2 = "[discovery:app]\ntype = ec2\nregion = eu-west-1\ntags = role=web\nport = 8080\n"


class SectionTests(SynchronousTestCase):
    def error(self, text: str) -> str:
        with self.assertRaises(ConfigError) as caught:
            parse(text, "lb.ini")
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        return message

    def test_only_discovery_sections(self) -> None:
        """An lb.ini with discovery sections and no [backend:NAME] is valid."""
        config = parse(DNS, "lb.ini")
        self.assertEqual(config.backends, ())
        (web,) = config.discoveries
        self.assertEqual((web.name, web.type, web.source), ("web", "dns", "dns:web"))
        assert web.dns is not None
        self.assertEqual(web.dns.name, "web.lb.test")
        self.assertEqual(web.common.port, 8080)
        self.assertEqual(web.common.empty_hold, 30.0)
        self.assertEqual((web.dns.min_interval, web.dns.max_interval), (1.0, 60.0))
        self.assertEqual(web.dns.resolvers, ())
        self.assertEqual(web.backend.source, "dns:web")

    def test_no_backends_at_all(self) -> None:
        message = self.error("[txlb]\n")
        self.assertIn("add at least one [backend:NAME] with an address, or a", message)

    def test_issue_example(self) -> None:
        """The issue's sections, keys as written there."""
        config = parse(
            "[discovery:web]\ntype = dns\nname = web.service.consul\nport = 8080\n"
            "resolvers = 127.0.0.1:8600\nmin_interval = 1s\nmax_interval = 60s\n"
            "empty_hold = 30s\n"
            "[discovery:app]\ntype = ec2\nregion = eu-west-1\n"
            "tags = role=web, env=prod\nasg = app-asg\nport = 8080\ninterval = 15s\n"
            "endpoint_url =\n",
            "lb.ini",
        )
        web, app = config.discoveries
        assert web.dns is not None and app.ec2 is not None
        self.assertEqual(web.dns.resolvers, (Address("127.0.0.1", 8600),))
        self.assertEqual(app.ec2.tags, (("role", "web"), ("env", "prod")))
        self.assertEqual((app.ec2.asg, app.ec2.interval), ("app-asg", 15.0))
        self.assertEqual(app.ec2.endpoint_url, "")
        self.assertEqual(app.source, "ec2:app")

    def test_per_backend_keys(self) -> None:
        """The section's weight, max_connections and health_* go to every backend."""
        config = parse(
            "[health]\ninterval = 3s\n"
            + DNS
            + "weight = 3\nmax_connections = 7\nhealth_path = /ping\n",
            "lb.ini",
        )
        backend = config.discoveries[0].backend
        self.assertEqual((backend.weight, backend.max_connections), (3.0, 7))
        self.assertEqual((backend.health.path, backend.health.interval), ("/ping", 3.0))

    def test_resolvers(self) -> None:
        """IP addresses with optional ports (53 by default), IPv6 too."""
        config = parse(DNS + "resolvers = 127.0.0.1, [::1]:5353, ::1\n", "lb.ini")
        dns = config.discoveries[0].dns
        assert dns is not None
        self.assertEqual(
            dns.resolvers,
            (Address("127.0.0.1", 53), Address("::1", 5353), Address("::1", 53)),
        )

    def test_errors(self) -> None:
        """Each mistake: one line naming file, section, key and what is allowed."""
        cases = [
            (
                "[discovery:web]\nname = x\n",
                "lb.ini: [discovery:web] type: missing; expected one of dns, ec2",
            ),
            (
                "[discovery:web]\ntype = consul\n",
                "lb.ini: [discovery:web] type: 'consul' is not valid; expected one"
                " of dns, ec2",
            ),
            (
                "[discovery:web]\ntype = dns\nport = 1\n",
                "lb.ini: [discovery:web] name: missing; expected a DNS name",
            ),
            (DNS.replace("port = 8080\n", ""), "[discovery:web] port: missing;"),
            (
                DNS + "port_tag = x\n",
                "[discovery:web] port_tag: not a key of type = dns",
            ),
            (DNS + "address = 1.2.3.4:5\n", "[discovery:web] address: unknown key;"),
            (DNS + "resolvers = ns1.example:53\n", "[discovery:web] resolvers: 'ns1"),
            (DNS + "min_interval = 2m\n", "min_interval: must not exceed max_interval"),
            (DNS.replace("web.lb.test", "bad..name"), "name: 'bad..name' is not valid"),
            (DNS + "weight = 0\n", "[discovery:web] weight: '0' is not valid"),
            (SRV + "port = 80\n", "[discovery:web] port: SRV records carry their own"),
            (SRV + "weight = 2\n", "[discovery:web] weight: SRV records carry their"),
            (EC2.replace("tags = role=web\n", ""), "[discovery:app] tags: set tags"),
            (EC2 + "port_tag = port\n", "[discovery:app] port: set either port or"),
            (EC2.replace("port = 8080\n", ""), "[discovery:app] port: set either"),
            (EC2.replace("role=web", "role"), "[discovery:app] tags: 'role' is not"),
            (EC2 + "endpoint_url = ftp://x\n", "endpoint_url: 'ftp://x' is not valid"),
            (EC2 + "name = x\n", "[discovery:app] name: not a key of type = ec2"),
            ("[discovery:a b]\ntype = dns\n", "[discovery:a b]: discovery name must"),
            (
                DNS + "proxy_protocol = v1\n",
                "[discovery:web] proxy_protocol: needs mode = tcp",
            ),
        ]
        for text, expected in cases:
            message = self.error(text)
            self.assertIn(expected, message, text)
            self.assertTrue(message.startswith("lb.ini: [discovery:"), message)

    def test_discovery_and_backend_mix(self) -> None:
        config = parse(DNS + "[backend:a]\naddress = 127.0.0.1:9001\n", "lb.ini")
        self.assertEqual([b.name for b in config.backends], ["a"])
        self.assertEqual(len(config.discoveries), 1)


class NamingTests(SynchronousTestCase):
    def test_plain(self) -> None:
        self.assertEqual(
            backend_name("web", Address("10.0.0.5", 8080)), "web-10.0.0.5-8080"
        )

    def test_ipv6(self) -> None:
        """An IPv6 address's colons become '_': a valid name."""
        name = backend_name("web", Address("2001:db8::1", 80))
        self.assertEqual(name, "web-2001_db8__1-80")
        self.assertTrue(valid_name(name))

    def test_long_names_shortened_distinct(self) -> None:
        """Over 64 characters: shortened with a hash, still distinct."""
        section = "s" * 60
        one = backend_name(section, Address("10.0.0.1", 80))
        two = backend_name(section, Address("10.0.0.2", 80))
        self.assertEqual(len(one), 64)
        self.assertTrue(valid_name(one) and valid_name(two))
        self.assertNotEqual(one, two)

    @given(
        st.text(alphabet="abcXYZ019_.-", min_size=1, max_size=64),
        st.ip_addresses(),
        st.ip_addresses(),
        st.integers(1, 65535),
    )
    def test_always_valid_and_distinct(
        self, section: str, first: object, second: object, port: int
    ) -> None:
        """Any section and address: a valid name, distinct for distinct addresses."""
        one = backend_name(section, Address(str(first), port))
        two = backend_name(section, Address(str(second), port))
        self.assertTrue(valid_name(one), one)
        if first != second:
            self.assertNotEqual(one, two)
