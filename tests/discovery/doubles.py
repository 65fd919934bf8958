"""
In-memory doubles behind the discovery seams: a DNS resolver (twisted.names'
C{IResolver}, through C{ResolverBase}), an AWS client (L{IEC2Client}) and a
scripted source (L{IDiscoverySource}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.names import dns, error
from twisted.names.common import ResolverBase
from twisted.python.failure import Failure
from zope.interface import implementer

from txlb.config import Config, DiscoveryConfig, parse
from txlb.discovery.ec2 import IEC2Client
from txlb.discovery.source import Answer, IDiscoverySource


def a(name: str, host: str, ttl: int = 5) -> dns.RRHeader:
    if ":" in host:
        payload: Any = dns.Record_AAAA(host, ttl=ttl)
        kind = dns.AAAA
    else:
        payload = dns.Record_A(host, ttl=ttl)
        kind = dns.A
    return dns.RRHeader(name, kind, dns.IN, ttl, payload)


def srv(
    name: str, target: str, port: int, priority: int = 0, weight: int = 10, ttl: int = 5
) -> dns.RRHeader:
    payload = dns.Record_SRV(priority, weight, port, target, ttl=ttl)
    return dns.RRHeader(name, dns.SRV, dns.IN, ttl, payload)


class FakeResolver(ResolverBase):
    """
    Answers from C{records}: (name, type) -> a list of records, or an
    exception class to fail with (DNSServerError: SERVFAIL ...), or
    C{"hang"} for a query that is never answered.  Unknown names: NXDOMAIN.
    A known name without records of a type: an empty answer (NODATA).

    @ivar extra: additional records sent with a name's answers.
    @ivar asked: (name, type) of every query.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[tuple[str, int], Any] = {}
        self.extra: dict[str, list[dns.RRHeader]] = {}
        self.asked: list[tuple[str, int]] = []
        self.hanging: list[Deferred[Any]] = []

    def set(self, name: str, *records: dns.RRHeader) -> None:
        """C{name}'s records now (A and AAAA, or SRV)."""
        for kind in (dns.A, dns.AAAA, dns.SRV):
            self.records[(name, kind)] = [r for r in records if r.type == kind]

    def _lookup(self, name: bytes, cls: int, kind: int, timeout: Any) -> Deferred[Any]:
        key = (name.decode() if isinstance(name, bytes) else str(name), kind)
        self.asked.append(key)
        found = self.records.get(key)
        if found is None:
            if any(n == key[0] for n, _ in self.records):
                return succeed(([], [], []))
            return fail(error.DNSNameError(key[0]))
        if found == "hang":
            d: Deferred[Any] = Deferred()
            self.hanging.append(d)
            return d
        if isinstance(found, type) and issubclass(found, Exception):
            return fail(found(key[0]))
        return succeed((list(found), [], list(self.extra.get(key[0], []))))


@implementer(IEC2Client)
class FakeEC2:
    """
    Instances and Auto Scaling groups in memory; C{error} makes every call
    raise it (e.g. a botocore ClientError for throttling).
    """

    def __init__(self) -> None:
        self.instances_by_id: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, list[tuple[str, str]]] = {}
        self.error: Exception | None = None
        self.calls: list[str] = []
        self._next = 0

    def launch(
        self, address: str, tags: dict[str, str] | None = None, state: str = "running"
    ) -> str:
        self._next += 1
        instance_id = f"i-{self._next:08x}"
        self.instances_by_id[instance_id] = {
            "InstanceId": instance_id,
            "PrivateIpAddress": address,
            "State": {"Name": state},
            "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
        }
        return instance_id

    def instances(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls.append("DescribeInstances")
        if self.error is not None:
            raise self.error
        found = []
        for instance in self.instances_by_id.values():
            tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
            ok = True
            for f in filters:
                name, values = f["Name"], f["Values"]
                if name == "instance-state-name":
                    ok &= instance["State"]["Name"] in values
                elif name == "instance-id":
                    ok &= instance["InstanceId"] in values
                elif name.startswith("tag:"):
                    ok &= tags.get(name[4:]) in values
                else:
                    raise AssertionError(f"unexpected filter {name}")
            if ok:
                found.append(instance)
        return found

    def group_members(self, name: str) -> list[str] | None:
        self.calls.append("DescribeAutoScalingGroups")
        if self.error is not None:
            raise self.error
        members = self.groups.get(name)
        if members is None:
            return None
        return [i for i, state in members if state == "InService"]


@implementer(IDiscoverySource)
class ScriptedSource:
    """Answers each lookup with the next of C{script} (an Answer or an exception)."""

    kind = "dns"
    query = "A/AAAA web.lb.test via 127.0.0.1:53"

    def __init__(self, *script: Answer | Exception) -> None:
        self.script = list(script)
        self.lookups = 0
        self.pending: Deferred[Answer] | None = None

    def lookup(self) -> Deferred[Answer]:
        self.lookups += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            return fail(Failure(item))
        return succeed(item)


def now_run(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """A thread pool that runs at once (for EC2Source)."""
    try:
        return succeed(f(*args))
    except Exception:
        return fail()


def section(text: str, extra: str = "") -> tuple[Config, DiscoveryConfig]:
    """A config of one discovery section (and C{extra} sections before it)."""
    config = parse(f"[txlb]\n{extra}\n{text}", "lb.ini")
    return config, config.discoveries[0]


__all__ = [
    "FakeEC2",
    "FakeResolver",
    "ScriptedSource",
    "a",
    "now_run",
    "section",
    "srv",
]
