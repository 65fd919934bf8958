"""
L{txlb.discovery.ec2}: which instances are backends, through an in-memory
L{IEC2Client}; and L{Boto3Client}'s paging against moto's server is in
C{tests/integration/test_discovery_ec2.py}.
"""

from __future__ import annotations

from botocore.exceptions import ClientError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.discovery.doubles import FakeEC2, now_run, section
from txlb.config import ConfigError, parse
from txlb.discovery.ec2 import Boto3Client, EC2Source, IEC2Client, missing_boto3
from txlb.discovery.source import Answer, IDiscoverySource, LookupFailed
from txlb.discovery.sources import check

BASE = "[discovery:app]\ntype = ec2\nregion = eu-west-1\n"


def source(ec2: FakeEC2, keys: str) -> EC2Source:
    _, config = section(BASE + keys)
    assert config.ec2 is not None
    return EC2Source(config.ec2, config.common.port, ec2, now_run)


class EC2Tests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ec2 = FakeEC2()
        verifyObject(IEC2Client, self.ec2)
        verifyObject(IEC2Client, Boto3Client("eu-west-1", ""))

    def answer(self, src: EC2Source) -> Answer:
        verifyObject(IDiscoverySource, src)
        return self.successResultOf(src.lookup())

    def addresses(self, answer: Answer) -> list[str]:
        return [str(f.address) for f in answer.found]

    def test_tags(self) -> None:
        """Running instances carrying every tag, at their private IP."""
        ec2 = self.ec2
        ec2.launch("10.0.1.5", {"role": "web", "env": "prod"})
        ec2.launch("10.0.1.6", {"role": "web", "env": "dev"})
        ec2.launch("10.0.1.7", {"role": "web", "env": "prod"}, state="stopped")
        ec2.launch("10.0.1.8", {"role": "web", "env": "prod"})
        answer = self.answer(source(ec2, "tags = role=web, env=prod\nport = 8080\n"))
        self.assertEqual(self.addresses(answer), ["10.0.1.5:8080", "10.0.1.8:8080"])
        self.assertEqual(answer.words, "2 running instances")

    def test_asg_in_service_only(self) -> None:
        """With asg: the group's InService members (not Terminating ones)."""
        ec2 = self.ec2
        one = ec2.launch("10.0.1.5")
        two = ec2.launch("10.0.1.6")
        ec2.launch("10.0.1.7")
        ec2.groups["app-asg"] = [(one, "InService"), (two, "Terminating:Wait")]
        answer = self.answer(source(ec2, "asg = app-asg\nport = 80\n"))
        self.assertEqual(self.addresses(answer), ["10.0.1.5:80"])
        self.assertEqual(ec2.calls, ["DescribeAutoScalingGroups", "DescribeInstances"])

    def test_asg_and_tags(self) -> None:
        ec2 = self.ec2
        one = ec2.launch("10.0.1.5", {"env": "prod"})
        two = ec2.launch("10.0.1.6", {"env": "dev"})
        ec2.groups["app-asg"] = [(one, "InService"), (two, "InService")]
        answer = self.answer(source(ec2, "asg = app-asg\ntags = env=prod\nport = 80\n"))
        self.assertEqual(self.addresses(answer), ["10.0.1.5:80"])

    def test_empty_answers(self) -> None:
        """No instance, no such group, no member in service: authoritative empties."""
        ec2 = self.ec2
        self.assertEqual(
            self.answer(source(ec2, "tags = role=web\nport = 80\n")).words,
            "no running instance",
        )
        self.assertEqual(
            self.answer(source(ec2, "asg = app-asg\nport = 80\n")).words,
            "no Auto Scaling group app-asg",
        )
        ec2.groups["app-asg"] = []
        self.assertEqual(
            self.answer(source(ec2, "asg = app-asg\nport = 80\n")).words,
            "no instance in service in app-asg",
        )

    def test_port_tag(self) -> None:
        """port_tag: each instance's port from its tag; a bad one left out."""
        ec2 = self.ec2
        ec2.launch("10.0.1.5", {"role": "web", "port": "9001"})
        ec2.launch("10.0.1.6", {"role": "web", "port": "http"})
        ec2.launch("10.0.1.7", {"role": "web"})
        answer = self.answer(source(ec2, "tags = role=web\nport_tag = port\n"))
        self.assertEqual(self.addresses(answer), ["10.0.1.5:9001"])

    def test_throttling_is_a_failed_lookup(self) -> None:
        """AWS's throttling (or any API error): a failed lookup, in words."""
        self.ec2.error = ClientError(
            {
                "Error": {
                    "Code": "RequestLimitExceeded",
                    "Message": "Request limit exceeded.",
                }
            },
            "DescribeInstances",
        )
        failure = self.failureResultOf(
            source(self.ec2, "tags = role=web\nport = 80\n").lookup(), LookupFailed
        )
        self.assertEqual(
            failure.getErrorMessage(),
            "RequestLimitExceeded (throttled): Request limit exceeded.",
        )
        self.ec2.error = ConnectionError("endpoint unreachable")
        failure = self.failureResultOf(
            source(self.ec2, "tags = role=web\nport = 80\n").lookup(), LookupFailed
        )
        self.assertEqual(
            failure.getErrorMessage(), "ConnectionError: endpoint unreachable"
        )

    def test_query_words(self) -> None:
        src = source(self.ec2, "tags = role=web, env=prod\nasg = app\nport = 80\n")
        self.assertEqual(
            src.query,
            "running instances with tags role=web, env=prod and asg app in eu-west-1",
        )


class CheckTests(SynchronousTestCase):
    def test_boto3_here(self) -> None:
        """The test extras install boto3, so ec2 sections pass the check."""
        self.assertIsNone(missing_boto3())
        check(parse(BASE + "tags = a=b\nport = 80\n", "lb.ini"))

    def test_boto3_missing(self) -> None:
        """Without boto3: one line naming the section and what to install."""
        import importlib.util

        real = importlib.util.find_spec
        self.patch(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == "boto3" else real(name, *a),
        )
        with self.assertRaises(ConfigError) as caught:
            check(parse(BASE + "tags = a=b\nport = 80\n", "lb.ini"))
        self.assertEqual(
            str(caught.exception),
            "lb.ini: [discovery:app] type: ec2 needs boto3: pip install 'txlb[ec2]'",
        )

    def test_no_region(self) -> None:
        """No region in the section nor in the environment: one line."""
        import txlb.discovery.sources as sources

        self.patch(sources, "default_region", lambda: None)
        text = BASE.replace("region = eu-west-1\n", "") + "tags = a=b\nport = 80\n"
        with self.assertRaises(ConfigError) as caught:
            check(parse(text, "lb.ini"))
        self.assertIn(
            "[discovery:app] region: no region: set region", str(caught.exception)
        )
