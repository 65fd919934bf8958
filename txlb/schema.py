"""
How a configuration key is declared, and the converters that read values.

A key is a field of a frozen attrs class declared with L{key}: its default,
its converter (text to value, raising C{ValueError}) and the words that say
what is allowed, once.  L{txlb.config} reads sections through L{keys_of}, so
a key exists exactly where it is declared.  Pure.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = [
    "Address",
    "ConfigError",
    "KeySpec",
    "Network",
    "key",
    "keys_of",
    "parse_duration",
    "parse_size",
    "read_in",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """
    A configuration file is unreadable or wrong.

    C{str(error)} is the single line shown to the user.
    """

    def __init__(
        self, filename: str, message: str, section: str = "", key: str = ""
    ) -> None:
        where = filename
        if section:
            where += f": [{section}]"
        if key:
            where += f" {key}"
        super().__init__(f"{where}: {message}")
        self.filename = filename
        self.section = section
        self.key = key


_KEY = "txlb.key"


@attrs.frozen
class KeySpec:
    """One key: how its text is read and what is allowed, in words."""

    name: str
    convert: Callable[[str], Any]
    allowed: str
    default: Any


def key(default: Any, convert: Callable[[str], Any], allowed: str) -> Any:
    """Declare a configuration key as an attrs field (see the module docstring)."""
    return attrs.field(default=default, metadata={_KEY: (convert, allowed)})


def keys_of(cls: type) -> dict[str, KeySpec]:
    """The keys an attrs class declares, by name, in declaration order."""
    found = {}
    for field in attrs.fields(cls):
        declared = field.metadata.get(_KEY)
        if declared is not None:
            convert, allowed = declared
            found[field.name] = KeySpec(field.name, convert, allowed, field.default)
    return found


@attrs.frozen
class Address:
    """A backend's host and TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


# --- converters: text -> value, ValueError when it is not allowed ------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}

DURATION = "a duration such as 500ms, 2s, 1m or plain seconds"
POSITIVE_DURATION = "a positive duration such as 500ms, 2s, 1m or plain seconds"


def parse_duration(text: str) -> float:
    """
    Parse C{500ms}, C{2s}, C{1m} or plain seconds (C{1.5}) into seconds.

    @raise ValueError: for anything else.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNIT[match.group(2)]


def positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(text)
    return value


def count(text: str) -> int:
    value = int(text.strip())
    if value < 0:
        raise ValueError(text)
    return value


def positive_count(text: str) -> int:
    value = count(text)
    if value < 1:
        raise ValueError(text)
    return value


_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)\s*$")
_SIZE_UNIT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """A byte count: plain bytes, or with a k, m or g suffix (KiB, MiB, GiB)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(text)
    return int(match[1]) * _SIZE_UNIT[match[2].lower()]


def positive_size(text: str) -> int:
    value = parse_size(text)
    if value < 1:
        raise ValueError(text)
    return value


def processes(text: str) -> int:
    """
    A number of processes, 1 to 256, or C{auto}: one per CPU this process
    may run on (its affinity, as nginx's C{worker_processes auto} counts).
    """
    value = text.strip()
    if value == "auto":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        return max(1, min(256, cpus or os.cpu_count() or 1))
    count = int(value)
    if not 1 <= count <= 256:
        raise ValueError(text)
    return count


def bounded(low: float, high: float) -> Callable[[str], float]:
    """A number above C{low} and at most C{high}."""

    def convert(text: str) -> float:
        value = float(text.strip())
        if not (low < value <= high):
            raise ValueError(text)
        return value

    return convert


def percent(text: str) -> int:
    value = int(text.strip().removesuffix("%"))
    if not 0 <= value <= 100:
        raise ValueError(text)
    return value


def statuses(text: str) -> tuple[tuple[int, int], ...]:
    """Codes and ranges: C{200-399}, C{200,204} or C{2xx}."""
    ranges = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if len(item) == 3 and item.endswith("xx") and item[0] in "12345":
            low = int(item[0]) * 100
            ranges.append((low, low + 99))
            continue
        low_text, _, high_text = item.partition("-")
        low = int(low_text)
        high = int(high_text) if high_text else low
        if not 100 <= low <= high <= 599:
            raise ValueError(text)
        ranges.append((low, high))
    return tuple(ranges)


def choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.strip()
        if value not in allowed:
            raise ValueError(text)
        return value

    return convert


def one_of(allowed: tuple[str, ...]) -> str:
    """The words for a L{choice}."""
    return "one of " + ", ".join(allowed)


def endpoints(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise ValueError(text)
    return items


def path(text: str) -> str:
    value = text.strip()
    if not value:
        return value  # no HTTP path: a TCP connect check
    if not value.startswith("/") or any(c in value for c in " \r\n\t"):
        raise ValueError(text)
    return value


def text(value: str) -> str:
    return value.strip()


def networks(text: str) -> tuple[Network, ...]:
    """A comma list of IP addresses and CIDR networks; empty is none."""
    found: list[Network] = []
    for item in text.split(","):
        if item.strip():
            # strict=False: 10.1.2.3/8 means 10.0.0.0/8, as in nginx and HAProxy.
            found.append(ipaddress.ip_network(item.strip(), strict=False))
    return tuple(found)


def address(text: str) -> Address:
    """C{host:port}, or C{[v6 host]:port}."""
    value = text.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(text)
    return Address(host, int(port))


def read_keys(
    items: Mapping[str, str],
    keys: Mapping[str, KeySpec],
    fail: Callable[[str, str], Exception],
) -> dict[str, Any]:
    """
    Convert a section's C{items} by their L{KeySpec}s.

    @param fail: makes the error for (key, message).
    """
    values: dict[str, Any] = {}
    for name, raw in items.items():
        spec = keys.get(name)
        if spec is None:
            raise fail(name, "unknown key; allowed: " + ", ".join(keys))
        try:
            values[name] = spec.convert(raw)
        except ValueError:
            raise fail(
                name, f"{raw.strip()!r} is not valid; expected {spec.allowed}"
            ) from None
    return values


def read_in(
    filename: str, section: str, items: Mapping[str, str], keys: Mapping[str, KeySpec]
) -> dict[str, Any]:
    """L{read_keys} for C{section} of C{filename}: its errors are L{ConfigError}s."""
    return read_keys(
        items, keys, lambda name, why: ConfigError(filename, why, section, name)
    )
