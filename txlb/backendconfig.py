"""
The keys of a backend and its checks, declared once (L{txlb.schema.key}):
L{HealthConfig} (``[health]``, and per backend as ``health_KEY``),
L{OutlierConfig} (``[outlier]``) and L{BackendConfig} (``[backend:NAME]``,
and every backend found elsewhere), and how a backend's section is read;
L{txlb.config} parses the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from txlb import schema
from txlb.schema import (
    DURATION,
    POSITIVE_DURATION,
    Address,
    ConfigError,
    KeySpec,
    key,
    keys_of,
    one_of,
    read_in,
)

__all__ = [
    "BACKEND_KEYS",
    "BACKEND_PREFIX",
    "HEALTH_OVERRIDE",
    "INITIAL_STATES",
    "PROXY_PROTOCOLS",
    "SHARED_KEYS",
    "BackendConfig",
    "HealthConfig",
    "OutlierConfig",
    "check_health",
    "health_overrides",
    "read_backend",
    "valid_name",
]

PROXY_PROTOCOLS = ("none", "v1", "v2")
INITIAL_STATES = ("healthy", "unknown")
BACKEND_PREFIX = "backend:"
HEALTH_OVERRIDE = "health_"


@attrs.frozen
class HealthConfig:
    """Active health checks (``[health]``; per backend as ``health_KEY``)."""

    path: str = key(
        "/health",
        schema.path,
        "an absolute path such as /health, or empty for a TCP check",
    )
    interval: float = key(2.0, schema.positive_duration, POSITIVE_DURATION)
    timeout: float = key(1.0, schema.positive_duration, POSITIVE_DURATION)
    rise: int = key(2, schema.positive_count, "a whole number, 1 or more")
    fall: int = key(3, schema.positive_count, "a whole number, 1 or more")
    expect_status: tuple[tuple[int, int], ...] = key(
        ((200, 399),), schema.statuses, "codes or ranges, e.g. 200-399, 200,204 or 2xx"
    )
    expect_body: str = key(
        "", schema.text, "text the probe's answer must contain (empty: any)"
    )
    slow_start: float = key(0.0, schema.parse_duration, "0 (off) or " + DURATION)
    initial_state: str = key(
        "healthy", schema.choice(INITIAL_STATES), one_of(INITIAL_STATES)
    )


@attrs.frozen
class OutlierConfig:
    """Passive checks: ejecting backends that fail real requests (``[outlier]``)."""

    consecutive_failures: int = key(5, schema.count, "a whole number, 0 (off) or more")
    base_ejection_time: float = key(30.0, schema.positive_duration, POSITIVE_DURATION)
    max_ejection_time: float = key(300.0, schema.positive_duration, POSITIVE_DURATION)
    max_ejected_percent: int = key(
        50, schema.percent, "a percentage of backends, 0 to 100"
    )


@attrs.frozen
class BackendConfig:
    """
    One backend: a ``[backend:NAME]`` section, or one found elsewhere.

    @ivar source: where it came from: C{static} (lb.ini), C{admin}, or a
        discovery section (C{dns:NAME}, C{ec2:NAME}).
    @ivar priority: RFC 2782's: backends of a higher number take requests
        only while none of a lower one is in rotation (SRV records set it;
        0 for all others).
    """

    name: str
    address: Address = key(
        attrs.NOTHING, schema.address, "host:port, e.g. 127.0.0.1:9001 or [::1]:9001"
    )
    weight: float = key(
        1.0, schema.bounded(0, 1000), "a number above 0 and at most 1000"
    )
    health: HealthConfig = HealthConfig()
    proxy_protocol: str = key(
        "none",
        schema.choice(PROXY_PROTOCOLS),
        one_of(PROXY_PROTOCOLS) + " (PROXY protocol header, tcp mode)",
    )
    max_connections: int = key(
        0,
        schema.count,
        "a whole number, 0 (unlimited) or more: requests or connections at once",
    )
    source: str = "static"
    priority: int = 0


BACKEND_KEYS: dict[str, KeySpec] = {
    **keys_of(BackendConfig),
    **{
        HEALTH_OVERRIDE + name: attrs.evolve(spec, name=HEALTH_OVERRIDE + name)
        for name, spec in keys_of(HealthConfig).items()
        if name != "initial_state"
    },
}
"""A backend section's keys: its own, and C{health_KEY} for each health key."""

SHARED_KEYS = {name: spec for name, spec in BACKEND_KEYS.items() if name != "address"}
"""The keys every backend of a discovery section shares."""


def check_health(
    filename: str, section: str, prefix: str, health: HealthConfig
) -> None:
    """Health keys that must agree: a probe's timeout within its interval."""
    if health.timeout > health.interval:
        raise ConfigError(
            filename, "timeout must not exceed interval", section, prefix + "timeout"
        )


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def valid_name(name: str) -> bool:
    """Whether C{name} may name a backend: 1-64 letters, digits, '_', '.', '-'."""
    return _NAME.fullmatch(name) is not None


def read_backend(
    filename: str,
    section: str,
    items: Mapping[str, str],
    seen: dict[Address, str],
    health: HealthConfig,
) -> BackendConfig:
    """
    A ``[backend:NAME]`` section's backend, its address not in C{seen}
    (address -> name, which it joins), its checks C{health} with its own
    C{health_KEY} overrides.
    """
    name = section[len(BACKEND_PREFIX) :].strip()
    if not valid_name(name):
        raise ConfigError(
            filename,
            "backend name must be 1-64 letters, digits, '_', '.' or '-'",
            section,
        )
    values = read_in(filename, section, items, BACKEND_KEYS)
    if "address" not in values:
        raise ConfigError(
            filename,
            "missing; expected " + BACKEND_KEYS["address"].allowed,
            section,
            "address",
        )
    address = values["address"]
    if address in seen:
        raise ConfigError(
            filename,
            f"{address} is already used by [backend:{seen[address]}]",
            section,
            "address",
        )
    seen[address] = name
    health = health_overrides(filename, section, values, health)
    return BackendConfig(name=name, health=health, **values)


def health_overrides(
    filename: str, section: str, values: dict[str, Any], health: HealthConfig
) -> HealthConfig:
    """Take the C{health_KEY} values out of C{values}, applied to C{health}."""
    overrides = {
        key[len(HEALTH_OVERRIDE) :]: values.pop(key)
        for key in list(values)
        if key.startswith(HEALTH_OVERRIDE)
    }
    if overrides:
        health = attrs.evolve(health, **overrides)
        check_health(filename, section, HEALTH_OVERRIDE, health)
    return health
