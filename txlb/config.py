"""
Parse and validate ``lb.ini``.

``parse(text, filename)`` is pure: it returns a frozen L{Config} or raises
L{ConfigError}, whose message is one line naming the file, the section, the
key and what is allowed.  Nothing here touches the network or the reactor.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

import attrs

__all__ = [
    "Address",
    "BackendConfig",
    "Config",
    "ConfigError",
    "HealthConfig",
    "Network",
    "OutlierConfig",
    "load",
    "parse",
    "parse_duration",
    "parse_size",
]

T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MODES = ("http", "tcp")
ALGORITHMS = ("least_conn", "round_robin", "least_time")
LOG_FORMATS = ("combined", "json")
PROXY_PROTOCOLS = ("none", "v1", "v2")
INITIAL_STATES = ("healthy", "unknown")
_HEALTH_OVERRIDE = "health_"


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


@attrs.frozen
class Address:
    """A backend's host and TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@attrs.frozen
class HealthConfig:
    """Active health-check settings (the ``[health]`` section)."""

    path: str = "/health"
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    expect_status: tuple[tuple[int, int], ...] = ((200, 399),)
    expect_body: str = ""
    slow_start: float = 0.0
    initial_state: str = "healthy"


@attrs.frozen
class OutlierConfig:
    """Passive checks: ejecting backends that fail real requests (``[outlier]``)."""

    consecutive_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejected_percent: int = 50


@attrs.frozen
class BackendConfig:
    """One ``[backend:NAME]`` section."""

    name: str
    address: Address
    weight: float = 1.0
    health: HealthConfig = HealthConfig()
    proxy_protocol: str = "none"
    max_connections: int = 0


@attrs.frozen
class Config:
    """The whole validated configuration."""

    filename: str
    backends: tuple[BackendConfig, ...]
    listen: tuple[str, ...] = ("tcp:8080",)
    mode: str = "http"
    algorithm: str = "least_conn"
    stats_listen: str = ""
    connect_timeout: float = 3.0
    backend_timeout: float = 30.0
    idle_timeout: float = 600.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    body_min_rate: int = 1024
    keepalive_timeout: float = 60.0
    client_timeout: float = 60.0
    max_clients: int = 10000
    max_header_size: int = 32768
    max_uri_length: int = 8192
    max_body_size: int = 0
    retries: int = 2
    idle_pool_size: int = 64
    access_log: str = ""
    access_log_format: str = "combined"
    admin_token_file: str = ""
    events_rate: float = 2.0
    trusted_proxies: tuple[Network, ...] = ()
    retry_budget: int = 50
    ewma_decay: float = 10.0
    panic_threshold: int = 0
    shutdown_timeout: float = 30.0
    queue_size: int = 1024
    queue_timeout: float = 5.0
    health: HealthConfig = HealthConfig()
    outlier: OutlierConfig = OutlierConfig()


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def parse_duration(text: str) -> float:
    """
    Parse C{500ms}, C{2s}, C{1m} or plain seconds (C{1.5}) into seconds.

    @raise ValueError: for anything else.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNIT[match.group(2)]


def _duration(text: str) -> float:
    return parse_duration(text)


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _count(text: str) -> int:
    value = int(text.strip())
    if value < 0:
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


def _positive_size(text: str) -> int:
    value = parse_size(text)
    if value < 1:
        raise ValueError(text)
    return value


def _positive_count(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise ValueError(text)
    return value


def _weight(text: str) -> float:
    value = float(text.strip())
    if not (0 < value <= 1000):
        raise ValueError(text)
    return value


def _events_rate(text: str) -> float:
    value = float(text.strip())
    if not (0 < value <= 20):
        raise ValueError(text)
    return value


def _percent(text: str) -> int:
    value = int(text.strip().removesuffix("%"))
    if not 0 <= value <= 100:
        raise ValueError(text)
    return value


def _statuses(text: str) -> tuple[tuple[int, int], ...]:
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


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.strip()
        if value not in allowed:
            raise ValueError(text)
        return value

    return convert


def _endpoints(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise ValueError(text)
    return items


def _path(text: str) -> str:
    value = text.strip()
    if not value:
        return value  # no HTTP path: a TCP connect check
    if not value.startswith("/") or any(c in value for c in " \r\n\t"):
        raise ValueError(text)
    return value


def _text(text: str) -> str:
    return text.strip()


def _networks(text: str) -> tuple[Network, ...]:
    """A comma list of IP addresses and CIDR networks; empty is none."""
    networks: list[Network] = []
    for item in text.split(","):
        if item.strip():
            # strict=False: 10.1.2.3/8 means 10.0.0.0/8, as in nginx and HAProxy.
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
    return tuple(networks)


def _address(text: str) -> Address:
    value = text.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(text)
    return Address(host, int(port))


_DURATION_HELP = "a duration such as 500ms, 2s, 1m or plain seconds"

# key -> (converter, what is allowed, Config field)
_TXLB_KEYS: Mapping[str, tuple[Callable[[str], object], str]] = {
    "listen": (_endpoints, "a comma list of Twisted endpoints such as tcp:8080"),
    "mode": (_choice(MODES), "one of " + ", ".join(MODES)),
    "algorithm": (_choice(ALGORITHMS), "one of " + ", ".join(ALGORITHMS)),
    "stats_listen": (_text, "empty or a Twisted endpoint such as tcp:9000"),
    "connect_timeout": (_positive_duration, "a positive " + _DURATION_HELP[2:]),
    "backend_timeout": (_positive_duration, "a positive " + _DURATION_HELP[2:]),
    "idle_timeout": (
        _duration,
        "0 (never) or " + _DURATION_HELP + "; closes a TCP-mode connection or"
        " WebSocket with no byte either way for that long",
    ),
    "header_timeout": (
        _positive_duration,
        "a positive " + _DURATION_HELP[2:] + "; the whole request head must"
        " arrive within it, else 408",
    ),
    "body_timeout": (
        _positive_duration,
        "a positive " + _DURATION_HELP[2:] + "; the request body must arrive"
        " within it, plus 1s per body_min_rate bytes received, else 408",
    ),
    "body_min_rate": (
        _count,
        "bytes per second, 0 (body_timeout is the whole body's deadline) or more",
    ),
    "keepalive_timeout": (
        _positive_duration,
        "a positive " + _DURATION_HELP[2:] + "; an idle client connection"
        " between requests is closed after it",
    ),
    "client_timeout": (
        _positive_duration,
        "a positive " + _DURATION_HELP[2:] + "; a client that reads none of"
        " its response for that long is disconnected",
    ),
    "max_clients": (
        _positive_count,
        "a whole number, 1 or more: client connections at once (more are refused)",
    ),
    "max_header_size": (
        _positive_size,
        "a size such as 32k or 32768 (bytes): the request head's limit, else 431",
    ),
    "max_uri_length": (
        _positive_size,
        "a size such as 8k or 8192 (bytes): the request target's limit, else 414",
    ),
    "max_body_size": (
        parse_size,
        "0 (unlimited) or a size such as 10m or 1048576 (bytes), else 413",
    ),
    "retries": (_count, "a whole number, 0 or more"),
    "idle_pool_size": (_count, "a whole number, 0 or more"),
    "access_log": (_text, "empty (off), - for standard output, or a file path"),
    "access_log_format": (_choice(LOG_FORMATS), "one of " + ", ".join(LOG_FORMATS)),
    "retry_budget": (_percent, "a percentage of live requests, 0 to 100"),
    "ewma_decay": (_positive_duration, "a positive " + _DURATION_HELP[2:]),
    "panic_threshold": (_percent, "a percentage of healthy backends, 0 (off) to 100"),
    "shutdown_timeout": (_duration, _DURATION_HELP),
    "admin_token_file": (
        _text,
        "empty (admin actions off) or the path of a file holding the admin token",
    ),
    "events_rate": (
        _events_rate,
        "server-sent events per second on /api/events, above 0 and at most 20",
    ),
    "queue_size": (
        _count,
        "a whole number, 0 (no queue: 503 at once) or more; requests waiting"
        " for a backend below its max_connections",
    ),
    "queue_timeout": (_positive_duration, "a positive " + _DURATION_HELP[2:]),
    "trusted_proxies": (
        _networks,
        "empty (trust no one) or a comma list of addresses and networks whose"
        " X-Forwarded-For is believed, e.g. 127.0.0.1, 10.0.0.0/8, ::1",
    ),
}
_HEALTH_KEYS: Mapping[str, tuple[Callable[[str], object], str]] = {
    "path": (_path, "an absolute path such as /health, or empty for a TCP check"),
    "interval": (_positive_duration, "a positive " + _DURATION_HELP[2:]),
    "timeout": (_positive_duration, "a positive " + _DURATION_HELP[2:]),
    "rise": (_positive_count, "a whole number, 1 or more"),
    "fall": (_positive_count, "a whole number, 1 or more"),
    "expect_status": (_statuses, "codes or ranges, e.g. 200-399, 200,204 or 2xx"),
    "expect_body": (_text, "text the probe's answer must contain (empty: any)"),
    "slow_start": (_duration, "0 (off) or " + _DURATION_HELP),
    "initial_state": (_choice(INITIAL_STATES), "one of " + ", ".join(INITIAL_STATES)),
}
_OUTLIER_KEYS: Mapping[str, tuple[Callable[[str], object], str]] = {
    "consecutive_failures": (_count, "a whole number, 0 (off) or more"),
    "base_ejection_time": (_positive_duration, "a positive " + _DURATION_HELP[2:]),
    "max_ejection_time": (_positive_duration, "a positive " + _DURATION_HELP[2:]),
    "max_ejected_percent": (_percent, "a percentage of backends, 0 to 100"),
}
_BACKEND_KEYS: Mapping[str, tuple[Callable[[str], object], str]] = {
    "address": (_address, "host:port, e.g. 127.0.0.1:9001 or [::1]:9001"),
    "weight": (_weight, "a number above 0 and at most 1000"),
    "max_connections": (
        _count,
        "a whole number, 0 (unlimited) or more: requests or connections at once",
    ),
    "proxy_protocol": (
        _choice(PROXY_PROTOCOLS),
        "one of " + ", ".join(PROXY_PROTOCOLS) + " (PROXY protocol header, tcp mode)",
    ),
    # Per-backend overrides of the [health] keys.
    **{
        _HEALTH_OVERRIDE + key: value
        for key, value in _HEALTH_KEYS.items()
        if key != "initial_state"
    },
}
_BACKEND_PREFIX = "backend:"


def _section(
    filename: str,
    name: str,
    items: Mapping[str, str],
    keys: Mapping[str, tuple[Callable[[str], object], str]],
) -> dict[str, object]:
    values: dict[str, object] = {}
    for key, raw in items.items():
        if key not in keys:
            raise ConfigError(
                filename,
                "unknown key; allowed: " + ", ".join(keys),
                name,
                key,
            )
        convert, allowed = keys[key]
        try:
            values[key] = convert(raw)
        except ValueError:
            raise ConfigError(
                filename, f"{raw.strip()!r} is not valid; expected {allowed}", name, key
            ) from None
    return values


def parse(text: str, filename: str = "lb.ini") -> Config:
    """
    Parse the text of an ``lb.ini`` file.

    @raise ConfigError: naming file, section, key and what is allowed.
    """
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        default_section="\x00no-defaults",
        strict=True,
    )
    try:
        parser.read_string(text, source=filename)
    except configparser.DuplicateSectionError as e:
        raise ConfigError(filename, "section appears twice", e.section) from None
    except configparser.DuplicateOptionError as e:
        raise ConfigError(filename, "key appears twice", e.section, e.option) from None
    except configparser.Error as e:
        first = str(e).splitlines()[0]
        raise ConfigError(filename, f"not an INI file: {first}") from None

    top: dict[str, object] = {}
    health: dict[str, object] = {}
    outlier: dict[str, object] = {}
    backend_sections: list[tuple[str, dict[str, str]]] = []
    for name in parser.sections():
        items = dict(parser.items(name))
        if name == "txlb":
            top = _section(filename, name, items, _TXLB_KEYS)
        elif name == "health":
            health = _section(filename, name, items, _HEALTH_KEYS)
        elif name == "outlier":
            outlier = _section(filename, name, items, _OUTLIER_KEYS)
        elif name.startswith(_BACKEND_PREFIX):
            backend_sections.append((name, items))
        else:
            raise ConfigError(
                filename,
                "unknown section; allowed: [txlb], [health], [outlier], [backend:NAME]",
                name,
            )
    if not backend_sections:
        raise ConfigError(
            filename, "no backends; add at least one [backend:NAME] with an address"
        )
    health_config = HealthConfig(**health)  # type: ignore[arg-type]
    _check_health(filename, "health", "", health_config)
    seen_addresses: dict[Address, str] = {}
    backends = [
        _backend(filename, name, items, seen_addresses, health_config)
        for name, items in backend_sections
    ]
    config = Config(
        filename=filename,
        backends=tuple(backends),
        health=health_config,
        outlier=OutlierConfig(**outlier),  # type: ignore[arg-type]
        **top,  # type: ignore[arg-type]
    )
    _check_mode(config)
    return config


def _check_mode(config: Config) -> None:
    """The keys that only make sense in one mode."""
    if config.mode == "tcp" and not config.stats_listen:
        raise ConfigError(
            config.filename,
            "tcp carries raw TCP on listen, so the stats API and dashboard need"
            " their own endpoint: set stats_listen, e.g. tcp:9000:interface=127.0.0.1",
            "txlb",
            "mode",
        )
    if config.mode != "tcp":
        for backend in config.backends:
            if backend.proxy_protocol != "none":
                raise ConfigError(
                    config.filename,
                    "needs mode = tcp (HTTP mode sends X-Forwarded-For instead)",
                    f"{_BACKEND_PREFIX}{backend.name}",
                    "proxy_protocol",
                )


def _check_health(
    filename: str, section: str, prefix: str, health: HealthConfig
) -> None:
    if health.timeout > health.interval:
        raise ConfigError(
            filename, "timeout must not exceed interval", section, prefix + "timeout"
        )


def _backend(
    filename: str,
    section: str,
    items: Mapping[str, str],
    seen: dict[Address, str],
    health: HealthConfig,
) -> BackendConfig:
    name = section[len(_BACKEND_PREFIX) :].strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ConfigError(
            filename,
            "backend name must be 1-64 letters, digits, '_', '.' or '-'",
            section,
        )
    values = _section(filename, section, items, _BACKEND_KEYS)
    if "address" not in values:
        raise ConfigError(
            filename,
            "missing; expected " + _BACKEND_KEYS["address"][1],
            section,
            "address",
        )
    address = values["address"]
    assert isinstance(address, Address)
    if address in seen:
        raise ConfigError(
            filename,
            f"{address} is already used by [backend:{seen[address]}]",
            section,
            "address",
        )
    seen[address] = name
    overrides = {
        key[len(_HEALTH_OVERRIDE) :]: values.pop(key)
        for key in list(values)
        if key.startswith(_HEALTH_OVERRIDE)
    }
    if overrides:
        health = attrs.evolve(health, **overrides)  # type: ignore[arg-type]
        _check_health(filename, section, _HEALTH_OVERRIDE, health)
    return BackendConfig(name=name, health=health, **values)  # type: ignore[arg-type]


def load(path: str) -> Config:
    """
    Read and parse the file at C{path}.

    @raise ConfigError: if it cannot be read or is wrong.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(path, f"cannot read the file: {reason}") from None
    return parse(text, path)
