"""
What a node publishes: a L{Report} of its load and its ejections, as JSON.
Pure.

Backends are named by address (C{host:port}), not by name: names come from
each node's own configuration (a static section, a discovery section's
name) and may differ between nodes; the address is the backend itself.
Only backends with requests in flight are listed, so an idle fleet's
reports stay small however many backends it has.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["MAX_REPORT", "VERSION", "Ejected", "Report", "decode", "encode"]

VERSION = 1
MAX_REPORT = 1 << 20
"""A larger report is refused (bytes)."""


@attrs.frozen
class Ejected:
    """
    One of the node's own passive ejections, in force.

    @ivar seconds: how long it had left when the report was made.
    @ivar serial: the backend's ejection count at that node, so each
        ejection is honoured once.
    """

    seconds: float
    cause: str
    serial: int


@attrs.frozen
class Report:
    """
    A node's word about itself.

    @ivar instance: this run of the node (two processes claiming one name
        are told apart by it).
    @ivar seq: counts the node's reports.
    @ivar load: requests in flight from the node, on all backends.
    @ivar ttl: the seconds the entry was written to last (its age is that
        less what it has left).
    @ivar backends: requests in flight from the node, by backend address.
    @ivar ejected: the node's own passive ejections, by backend address.
    """

    node: str
    instance: str
    seq: int
    load: int
    ttl: float
    backends: Mapping[str, int] = attrs.field(factory=dict)
    ejected: Mapping[str, Ejected] = attrs.field(factory=dict)


def encode(report: Report) -> bytes:
    """The report as compact JSON."""
    return json.dumps(
        {
            "v": VERSION,
            "node": report.node,
            "instance": report.instance,
            "seq": report.seq,
            "load": report.load,
            "ttl": report.ttl,
            "backends": dict(report.backends),
            "ejected": {
                address: [round(e.seconds, 3), e.cause, e.serial]
                for address, e in report.ejected.items()
            },
        },
        separators=(",", ":"),
    ).encode("utf-8")


def decode(body: bytes) -> Report:
    """
    Read a report.

    @raise ValueError: it is not one (in words).
    """
    if len(body) > MAX_REPORT:
        raise ValueError(f"larger than {MAX_REPORT} bytes")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("v") != VERSION:
        raise ValueError(f"version {data.get('v')!r}, expected {VERSION}")
    backends = _mapping(data, "backends")
    ejected = _mapping(data, "ejected")
    return Report(
        node=_text(data, "node"),
        instance=_text(data, "instance"),
        seq=_count(data.get("seq"), "seq"),
        load=_count(data.get("load"), "load"),
        ttl=_seconds(data.get("ttl"), "ttl"),
        backends={
            _address(a): _count(n, f"backends[{a!r}]") for a, n in backends.items()
        },
        ejected={_address(a): _ejected(a, e) for a, e in ejected.items()},
    )


def _mapping(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not an object")
    return value


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is not a non-empty string")
    return value


def _count(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} is not a count")
    return value


def _address(address: str) -> str:
    if not address or len(address) > 300:
        raise ValueError(f"{address!r} is not a backend address")
    return address


def _ejected(address: str, value: Any) -> Ejected:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(f"ejected[{address!r}] is not [seconds, cause, serial]")
    seconds, cause, serial = value
    if not isinstance(cause, str):
        raise ValueError(f"ejected[{address!r}] cause is not a string")
    return Ejected(
        _seconds(seconds, f"ejected[{address!r}] seconds"),
        cause,
        _count(serial, f"ejected[{address!r}] serial"),
    )


def _seconds(value: Any, name: str) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} is not a number of seconds")
    return float(value)
