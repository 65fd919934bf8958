"""
The keys of a C{[discovery:NAME]} section, declared once
(L{txlb.schema.key}), and the checks between them.  Pure.

A section has the keys every type shares (L{CommonConfig}), those of its
C{type} (L{DNSConfig} or L{EC2Config}) and the per-backend keys of
C{[backend:NAME]} but C{address} (weight, max_connections, proxy_protocol,
health_*), which L{txlb.config} reads, for every backend it finds.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs

from txlb import schema
from txlb.schema import DURATION, POSITIVE_DURATION, Address, KeySpec, key, keys_of

__all__ = [
    "TYPES",
    "CommonConfig",
    "DNSConfig",
    "EC2Config",
    "read_section",
]

TYPES = ("dns", "ec2")


def hostname(text: str) -> str:
    """A DNS name: labels of letters, digits, '-' and '_', 253 at most."""
    value = text.strip().rstrip(".").lower()
    labels = value.split(".")
    if not value or len(value) > 253:
        raise ValueError(text)
    for label in labels:
        if not re.fullmatch(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?", label):
            raise ValueError(text)
    return value


def port(text: str) -> int:
    value = int(text.strip())
    if not 0 < value < 65536:
        raise ValueError(text)
    return value


def resolvers(text: str) -> tuple[Address, ...]:
    """C{host[:port], ...}: IP addresses, port 53 unless given."""
    found = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            # A bare address (IPv6 unbracketed) takes port 53.
            found.append(Address(str(ipaddress.ip_address(item)), 53))
            continue
        except ValueError:
            pass
        address = schema.address(item)
        ipaddress.ip_address(address.host)
        found.append(address)
    return tuple(found)


def tags(text: str) -> tuple[tuple[str, str], ...]:
    """C{key=value, ...}: instances must carry every one of these tags."""
    found = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        name, sep, value = raw.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(text)
        found.append((name.strip(), value.strip()))
    return tuple(found)


def url(text: str) -> str:
    value = text.strip()
    if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError(text)
    return value


@attrs.frozen
class CommonConfig:
    """The keys of every discovery section."""

    type: str = key(attrs.NOTHING, schema.choice(TYPES), schema.one_of(TYPES))
    port: int = key(
        0,
        port,
        "a TCP port, 1 to 65535: the backends' (type = dns with an A/AAAA"
        " name, or type = ec2 without port_tag)",
    )
    empty_hold: float = key(
        30.0,
        schema.parse_duration,
        "0 or " + DURATION + "; an authoritative empty answer (NXDOMAIN, no"
        " instances) empties the pool only once it has lasted this long",
    )


@attrs.frozen
class DNSConfig:
    """C{type = dns}: A/AAAA records of a name, or SRV records of a _name."""

    name: str = key(
        attrs.NOTHING,
        hostname,
        "a DNS name: A/AAAA records, or SRV records if it starts with _"
        " (e.g. _web._tcp.service.consul)",
    )
    resolvers: tuple[Address, ...] = key(
        (),
        resolvers,
        "empty (the system's, from /etc/resolv.conf) or a comma list of IP"
        " addresses with optional ports, e.g. 127.0.0.1:8600, [::1]:53",
    )
    min_interval: float = key(1.0, schema.positive_duration, POSITIVE_DURATION)
    max_interval: float = key(60.0, schema.positive_duration, POSITIVE_DURATION)

    @property
    def srv(self) -> bool:
        return self.name.startswith("_")


@attrs.frozen
class EC2Config:
    """C{type = ec2}: running instances by tags and/or Auto Scaling group."""

    region: str = key(
        "",
        schema.text,
        "an AWS region such as eu-west-1, or empty for the standard chain"
        " (AWS_REGION, AWS_DEFAULT_REGION, ~/.aws/config)",
    )
    tags: tuple[tuple[str, str], ...] = key(
        (), tags, "a comma list of KEY=VALUE tags, e.g. role=web, env=prod"
    )
    asg: str = key("", schema.text, "an Auto Scaling group's name")
    port_tag: str = key(
        "", schema.text, "the name of a tag holding each instance's port"
    )
    interval: float = key(15.0, schema.positive_duration, POSITIVE_DURATION)
    endpoint_url: str = key(
        "",
        url,
        "empty (AWS's) or an http(s) URL for the EC2 and Auto Scaling calls"
        " (a VPC endpoint, a test server)",
    )


_COMMON = keys_of(CommonConfig)
_TYPE = {"dns": (DNSConfig, keys_of(DNSConfig)), "ec2": (EC2Config, keys_of(EC2Config))}


def read_section(
    items: Mapping[str, str],
    backend_keys: Collection[str],
    fail: Callable[[str, str], Exception],
) -> tuple[CommonConfig, DNSConfig | EC2Config, dict[str, str]]:
    """
    Read a discovery section's own keys from C{items}.

    @param backend_keys: the per-backend keys the section may also hold.
    @param fail: makes the one-line error for (key, message).
    @return: its common and type keys, and the per-backend items left.
    """
    if "type" not in items:
        raise fail("type", "missing; expected " + _COMMON["type"].allowed)
    kind = schema.read_keys({"type": items["type"]}, _COMMON, fail)["type"]
    cls, own = _TYPE[kind]
    allowed: dict[str, KeySpec] = {**_COMMON, **own}
    others = {name for t, (_, keys) in _TYPE.items() if t != kind for name in keys}
    mine: dict[str, str] = {}
    rest: dict[str, str] = {}
    for name, raw in items.items():
        if name in allowed:
            mine[name] = raw
        elif name in backend_keys:
            rest[name] = raw
        elif name in others:
            raise fail(name, f"not a key of type = {kind}")
        else:
            words = ", ".join([*allowed, *backend_keys])
            raise fail(name, "unknown key; allowed: " + words)
    values = schema.read_keys(mine, allowed, fail)
    common = CommonConfig(**{k: v for k, v in values.items() if k in _COMMON})
    typed: Any = cls(**_required(values, own, fail))
    _check(common, typed, rest, fail)
    return common, typed, rest


def _required(
    values: Mapping[str, Any],
    keys: Mapping[str, KeySpec],
    fail: Callable[[str, str], Exception],
) -> dict[str, Any]:
    found = {k: v for k, v in values.items() if k in keys}
    for name, spec in keys.items():
        if spec.default is attrs.NOTHING and name not in found:
            raise fail(name, "missing; expected " + spec.allowed)
    return found


def _check(
    common: CommonConfig,
    typed: DNSConfig | EC2Config,
    rest: Mapping[str, str],
    fail: Callable[[str, str], Exception],
) -> None:
    if isinstance(typed, DNSConfig):
        if typed.min_interval > typed.max_interval:
            raise fail("min_interval", "must not exceed max_interval")
        if typed.srv and common.port:
            raise fail("port", "SRV records carry their own; remove it")
        if typed.srv and "weight" in rest:
            raise fail("weight", "SRV records carry their own; remove it")
        if not typed.srv and not common.port:
            raise fail("port", "missing; an A/AAAA name needs the backends' port")
        return
    if not typed.tags and not typed.asg:
        raise fail("tags", "set tags, asg or both: which instances are backends")
    if bool(common.port) == bool(typed.port_tag):
        raise fail("port", "set either port or port_tag (a tag holding the port)")
