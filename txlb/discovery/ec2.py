"""
C{type = ec2}: running EC2 instances as backends, selected by tags and/or
an Auto Scaling group, at their private IP address.

The AWS calls are blocking (boto3), so they run in a dedicated thread pool
(C{deferToThreadPool}): the reactor never waits for AWS.  They go through
L{IEC2Client}, which tests replace with an in-memory double; L{Boto3Client}
is the real one: boto3's standard credential chain (an instance role on
EC2), paginated calls, and no retries of its own: a throttled or failed
call fails the lookup, which the discovery service retries with backoff,
keeping the last good set meanwhile.

With C{asg}, only the group's C{InService} instances count, so an instance
the group is taking out (C{Terminating}, held by a lifecycle hook) drains
before it goes.  boto3 is an optional dependency (C{pip install
'txlb[ec2]'}): L{missing_boto3} says so at start-up.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface, implementer

from txlb.discovery.config import EC2Config
from txlb.discovery.source import Answer, Found, IDiscoverySource, LookupFailed
from txlb.schema import Address

__all__ = [
    "THROTTLED",
    "Boto3Client",
    "EC2Source",
    "IEC2Client",
    "default_region",
    "missing_boto3",
]

THROTTLED = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled"}
)
"""AWS's error codes for "too many requests"."""

_Filters = list[dict[str, Any]]


class IEC2Client(Interface):
    """The AWS calls EC2 discovery makes; blocking (run in a thread)."""

    def instances(filters: _Filters) -> list[dict[str, Any]]:
        """
        Every instance DescribeInstances finds with C{filters} (all pages),
        as boto3 gives them.

        @raise Exception: the call failed (botocore's errors).
        """

    def group_members(name: str) -> list[str] | None:
        """
        The IDs of the C{InService} instances of the Auto Scaling group
        C{name} (DescribeAutoScalingGroups), or L{None} if there is no such
        group.
        """


@implementer(IEC2Client)
class Boto3Client:
    """L{IEC2Client} through boto3; clients are made on first use, in the thread."""

    def __init__(self, region: str, endpoint_url: str) -> None:
        self._region = region or None
        self._endpoint_url = endpoint_url or None
        self._clients: dict[str, Any] = {}

    def _client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                # One attempt: the discovery service backs off itself, and
                # keeps the last set meanwhile.
                retries={"mode": "standard", "max_attempts": 1},
                connect_timeout=5,
                read_timeout=15,
                user_agent_extra="txlb-discovery",
            )
            client = boto3.session.Session().client(
                service,
                region_name=self._region,
                endpoint_url=self._endpoint_url,
                config=config,
            )
            self._clients[service] = client
        return client

    def instances(self, filters: _Filters) -> list[dict[str, Any]]:
        pages = self._client("ec2").get_paginator("describe_instances")
        found = []
        for page in pages.paginate(
            Filters=filters, PaginationConfig={"PageSize": 1000}
        ):
            for reservation in page.get("Reservations", []):
                found.extend(reservation.get("Instances", []))
        return found

    def group_members(self, name: str) -> list[str] | None:
        pages = self._client("autoscaling").get_paginator(
            "describe_auto_scaling_groups"
        )
        groups = []
        for page in pages.paginate(AutoScalingGroupNames=[name]):
            groups.extend(page.get("AutoScalingGroups", []))
        if not groups:
            return None
        return [
            instance["InstanceId"]
            for group in groups
            for instance in group.get("Instances", [])
            if instance.get("LifecycleState") == "InService"
        ]


@implementer(IDiscoverySource)
class EC2Source:
    """Asks EC2 (in a thread) for a section's instances."""

    kind = "ec2"
    log = Logger()

    def __init__(
        self,
        config: EC2Config,
        port: int,
        client: IEC2Client,
        run: Callable[..., Deferred[Any]],
    ) -> None:
        """
        @param port: the backends' port, unless C{port_tag} names a tag.
        @param run: calls a function in the discovery thread pool:
            C{run(f, *args)} fires with its result (C{deferToThreadPool});
            tests run it at once.
        """
        self._config = config
        self._port = port
        self._client = client
        self._run = run
        self._bad_ports: set[str] = set()
        parts = []
        if config.tags:
            parts.append("tags " + ", ".join(f"{k}={v}" for k, v in config.tags))
        if config.asg:
            parts.append(f"asg {config.asg}")
        where = config.region or "the default region"
        self.query = f"running instances with {' and '.join(parts)} in {where}"

    def lookup(self) -> Deferred[Answer]:
        d = self._run(self._ask)
        return d.addCallback(self._answer)

    def _ask(self) -> tuple[list[dict[str, Any]], str]:
        """In the thread: the instances, or an empty answer's reason."""
        config = self._config
        filters: _Filters = [{"Name": "instance-state-name", "Values": ["running"]}]
        filters += [{"Name": f"tag:{k}", "Values": [v]} for k, v in config.tags]
        try:
            if config.asg:
                members = self._client.group_members(config.asg)
                if members is None:
                    return [], f"no Auto Scaling group {config.asg}"
                if not members:
                    return [], f"no instance in service in {config.asg}"
                filters.append({"Name": "instance-id", "Values": members})
            return self._client.instances(filters), "no running instance"
        except Exception as e:
            raise LookupFailed(_words(e)) from None

    def _answer(self, asked: tuple[list[dict[str, Any]], str]) -> Answer:
        instances, empty = asked
        found = []
        for instance in sorted(instances, key=lambda i: i.get("InstanceId", "")):
            if instance.get("State", {}).get("Name", "running") != "running":
                continue
            address = instance.get("PrivateIpAddress")
            port = self._port_of(instance)
            if address and port:
                found.append(Found(Address(address, port)))
        if not found:
            return Answer((), empty)
        count = len(found)
        return Answer(
            tuple(found), f"{count} running instance{'' if count == 1 else 's'}"
        )

    def _port_of(self, instance: dict[str, Any]) -> int | None:
        tag = self._config.port_tag
        if not tag:
            return self._port
        tags = {t.get("Key"): t.get("Value") for t in instance.get("Tags", [])}
        value = str(tags.get(tag, "")).strip()
        if value.isdigit() and 0 < int(value) < 65536:
            return int(value)
        instance_id = instance.get("InstanceId", "?")
        if instance_id not in self._bad_ports:
            self._bad_ports.add(instance_id)
            self.log.warn(
                "instance {instance} left out: its tag {tag} is {value!r}, not a port",
                instance=instance_id,
                tag=tag,
                value=value,
            )
        return None


def _words(error: Exception) -> str:
    """An AWS error in a few words: its code and message."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        detail = response.get("Error", {})
        code = detail.get("Code", "")
        message = detail.get("Message", "")
        if code:
            throttled = " (throttled)" if code in THROTTLED else ""
            return f"{code}{throttled}: {message}" if message else code + throttled
    return f"{type(error).__name__}: {error}"


def missing_boto3() -> str | None:
    """Why C{type = ec2} cannot work here, or L{None}."""
    if importlib.util.find_spec("boto3") is None:
        return "ec2 needs boto3: pip install 'txlb[ec2]'"
    return None


def default_region() -> str | None:
    """The region boto3's chain gives (environment, ~/.aws/config), if any."""
    import botocore.session

    region = botocore.session.get_session().get_config_variable("region")
    return str(region) if region else None
