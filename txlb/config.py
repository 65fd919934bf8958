"""
Parse and validate ``lb.ini``.

``parse(text, filename)`` is pure: it returns a frozen L{Config} or raises
L{ConfigError}, whose message is one line naming the file, the section, the
key and what is allowed.  Nothing here touches the network or the reactor.

Every key is declared once, as a field of the frozen class of the part that
reads it (L{txlb.schema.key}: default, converter, what is allowed): the
front end's L{ClientConfig}, the proxies' L{ProxyConfig}, the registry's
L{BalancingConfig}, the stats' L{ObserveConfig} (all in ``[txlb]``, declared
in L{txlb.settings}), L{HealthConfig} (``[health]``), L{OutlierConfig}
(``[outlier]``), L{FleetConfig} (``[fleet]``, declared in
L{txlb.fleet.settings}) and L{BackendConfig} (``[backend:NAME]``).  Each
part is given its own value.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Mapping
from typing import Any

import attrs

from txlb import schema
from txlb.discovery.config import CommonConfig, DNSConfig, EC2Config, read_section
from txlb.fleet.settings import FleetConfig
from txlb.schema import (
    DURATION,
    POSITIVE_DURATION,
    Address,
    KeySpec,
    Network,
    key,
    keys_of,
    one_of,
    parse_duration,
    parse_size,
)
from txlb.settings import (
    ALGORITHMS,
    AffinityConfig,
    BalancingConfig,
    ClientConfig,
    ObserveConfig,
    ProxyConfig,
    RateLimitConfig,
)

__all__ = [
    "ALGORITHMS",
    "Address",
    "AffinityConfig",
    "BackendConfig",
    "BalancingConfig",
    "ClientConfig",
    "Config",
    "ConfigError",
    "DiscoveryConfig",
    "FleetConfig",
    "HealthConfig",
    "Network",
    "ObserveConfig",
    "OutlierConfig",
    "ProxyConfig",
    "RateLimitConfig",
    "load",
    "parse",
    "parse_backend",
    "parse_duration",
    "parse_size",
    "txlb_keys",
]

MODES = ("http", "tcp")
PROXY_PROTOCOLS = ("none", "v1", "v2")
INITIAL_STATES = ("healthy", "unknown")
SOURCES = ("static", "admin")
"""Where a backend came from (discovery sections add their own)."""

_HEALTH_OVERRIDE = "health_"
_BACKEND_PREFIX = "backend:"
_DISCOVERY_PREFIX = "discovery:"


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


@attrs.frozen
class DiscoveryConfig:
    """
    A ``[discovery:NAME]`` section (its keys: L{txlb.discovery.config}).

    @ivar dns: its C{type = dns} keys, or L{None}.
    @ivar ec2: its C{type = ec2} keys, or L{None}.
    @ivar backend: the keys of every backend it finds (weight,
        max_connections, proxy_protocol, health); each gets its own name and
        address, and C{source}.
    """

    name: str
    common: CommonConfig
    backend: BackendConfig
    dns: DNSConfig | None = None
    ec2: EC2Config | None = None

    @property
    def type(self) -> str:
        return self.common.type

    @property
    def source(self) -> str:
        """Its backends' C{source}: C{dns:NAME} or C{ec2:NAME}."""
        return f"{self.common.type}:{self.name}"


@attrs.frozen
class Config:
    """The whole validated configuration."""

    filename: str
    backends: tuple[BackendConfig, ...]
    discoveries: tuple[DiscoveryConfig, ...] = ()
    listen: tuple[str, ...] = key(
        ("tcp:8080",),
        schema.endpoints,
        "a comma list of Twisted endpoints such as tcp:8080",
    )
    mode: str = key("http", schema.choice(MODES), one_of(MODES))
    stats_listen: str = key(
        "", schema.text, "empty or a Twisted endpoint such as tcp:9000"
    )
    shutdown_timeout: float = key(30.0, schema.parse_duration, DURATION)
    shutdown_grace: float = key(
        0.0,
        schema.parse_duration,
        "0 (off) or " + DURATION + "; on SIGTERM /healthz says 503 at once and the"
        " ports stay open this long before the drain",
    )
    workers: int = key(
        1,
        schema.processes,
        "1 (one process), a number of worker processes up to 256, or auto"
        " (one per CPU)",
    )
    client: ClientConfig = ClientConfig()
    proxy: ProxyConfig = ProxyConfig()
    balancing: BalancingConfig = BalancingConfig()
    observe: ObserveConfig = ObserveConfig()
    health: HealthConfig = HealthConfig()
    outlier: OutlierConfig = OutlierConfig()
    affinity: AffinityConfig = AffinityConfig()
    ratelimit: RateLimitConfig = RateLimitConfig()
    fleet: FleetConfig = FleetConfig()


# The [txlb] section: Config's own keys and those of its groups.
_TXLB_GROUPS: dict[str, type] = {
    "client": ClientConfig,
    "proxy": ProxyConfig,
    "balancing": BalancingConfig,
    "observe": ObserveConfig,
    "affinity": AffinityConfig,
}


def txlb_keys() -> dict[str, tuple[str, KeySpec]]:
    """Every ``[txlb]`` key, with the L{Config} field ('' for its own) it sets."""
    found = {name: ("", spec) for name, spec in keys_of(Config).items()}
    for group, cls in _TXLB_GROUPS.items():
        found.update((name, (group, spec)) for name, spec in keys_of(cls).items())
    return found


_TXLB_KEYS = txlb_keys()
_TXLB_SPECS = {name: spec for name, (_, spec) in _TXLB_KEYS.items()}
_HEALTH_KEYS = keys_of(HealthConfig)
_OUTLIER_KEYS = keys_of(OutlierConfig)
_RATELIMIT_KEYS = keys_of(RateLimitConfig)
_FLEET_KEYS = keys_of(FleetConfig)
_BACKEND_KEYS: dict[str, KeySpec] = {
    **keys_of(BackendConfig),
    **{
        _HEALTH_OVERRIDE + name: attrs.evolve(spec, name=_HEALTH_OVERRIDE + name)
        for name, spec in _HEALTH_KEYS.items()
        if name != "initial_state"
    },
}


def _read(
    filename: str, section: str, items: Mapping[str, str], keys: Mapping[str, KeySpec]
) -> dict[str, Any]:
    return schema.read_keys(
        items, keys, lambda name, why: ConfigError(filename, why, section, name)
    )


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

    top: dict[str, Any] = {}
    health: dict[str, Any] = {}
    outlier: dict[str, Any] = {}
    ratelimit: RateLimitConfig | None = None
    fleet: dict[str, Any] | None = None
    backend_sections: list[tuple[str, dict[str, str]]] = []
    discovery_sections: list[tuple[str, dict[str, str]]] = []
    for name in parser.sections():
        items = dict(parser.items(name))
        if name == "txlb":
            top = _read(
                filename, name, items, {k: s for k, (_, s) in _TXLB_KEYS.items()}
            )
        elif name == "health":
            health = _read(filename, name, items, _HEALTH_KEYS)
        elif name == "outlier":
            outlier = _read(filename, name, items, _OUTLIER_KEYS)
        elif name == "ratelimit":
            ratelimit = _ratelimit(filename, items)
        elif name == "fleet":
            fleet = _read(filename, name, items, _FLEET_KEYS)
        elif name.startswith(_BACKEND_PREFIX):
            backend_sections.append((name, items))
        elif name.startswith(_DISCOVERY_PREFIX):
            discovery_sections.append((name, items))
        else:
            raise ConfigError(
                filename,
                "unknown section; allowed: [txlb], [health], [outlier], [ratelimit],"
                " [fleet], [backend:NAME], [discovery:NAME]",
                name,
            )
    if not backend_sections and not discovery_sections:
        raise ConfigError(
            filename,
            "no backends; add at least one [backend:NAME] with an address, or a"
            " [discovery:NAME]",
        )
    health_config = HealthConfig(**health)
    _check_health(filename, "health", "", health_config)
    seen_addresses: dict[Address, str] = {}
    backends = [
        _backend(filename, name, items, seen_addresses, health_config)
        for name, items in backend_sections
    ]
    discoveries = tuple(
        _discovery(filename, name, items, health_config)
        for name, items in discovery_sections
    )
    own: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {group: {} for group in _TXLB_GROUPS}
    for name, value in top.items():
        group = _TXLB_KEYS[name][0]
        (groups[group] if group else own)[name] = value
    config = Config(
        filename=filename,
        backends=tuple(backends),
        discoveries=discoveries,
        health=health_config,
        outlier=OutlierConfig(**outlier),
        ratelimit=ratelimit or RateLimitConfig(),
        fleet=_fleet(filename, fleet),
        **{group: _TXLB_GROUPS[group](**values) for group, values in groups.items()},
        **own,
    )
    _check_mode(config)
    return config


def _ratelimit(filename: str, items: Mapping[str, str]) -> RateLimitConfig:
    values = _read(filename, "ratelimit", items, _RATELIMIT_KEYS)
    if "rate" not in values:
        raise ConfigError(
            filename,
            "missing; expected " + _RATELIMIT_KEYS["rate"].allowed,
            "ratelimit",
            "rate",
        )
    if "burst" in values and values["burst"] < 1:
        raise ConfigError(
            filename,
            f"{items['burst'].strip()!r} is not valid; expected a whole number,"
            " 1 or more",
            "ratelimit",
            "burst",
        )
    return RateLimitConfig(**values)


def _fleet(filename: str, values: dict[str, Any] | None) -> FleetConfig:
    """A C{[fleet]} section must name its Redis; no section is no fleet."""
    if values is None:
        return FleetConfig()
    if values.get("redis") is None:
        raise ConfigError(
            filename,
            "missing; expected " + _FLEET_KEYS["redis"].allowed,
            "fleet",
            "redis",
        )
    return FleetConfig(**values)


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
    if config.mode == "tcp":
        _check_tcp_affinity(config)
    if config.mode != "tcp":
        sections = [(_BACKEND_PREFIX + b.name, b) for b in config.backends]
        sections += [
            (_DISCOVERY_PREFIX + d.name, d.backend) for d in config.discoveries
        ]
        for section, backend in sections:
            if backend.proxy_protocol != "none":
                raise ConfigError(
                    config.filename,
                    "needs mode = tcp (HTTP mode sends X-Forwarded-For instead)",
                    section,
                    "proxy_protocol",
                )


def _check_tcp_affinity(config: Config) -> None:
    """TCP mode reads no request: only the client's address can be a key."""
    balancing = config.balancing
    if balancing.algorithm == "hash" and balancing.hash_key.kind != "client_ip":
        raise ConfigError(
            config.filename,
            f"{balancing.hash_key} needs mode = http (tcp mode hashes client_ip only)",
            "txlb",
            "hash_key",
        )
    if config.affinity.sticky is not None:
        raise ConfigError(
            config.filename,
            "needs mode = http (a cookie is an HTTP header)",
            "txlb",
            "sticky",
        )
    if config.ratelimit.enabled:
        raise ConfigError(
            config.filename,
            "needs mode = http (a 429 is an HTTP answer)",
            "ratelimit",
        )


def _check_health(
    filename: str, section: str, prefix: str, health: HealthConfig
) -> None:
    if health.timeout > health.interval:
        raise ConfigError(
            filename, "timeout must not exceed interval", section, prefix + "timeout"
        )


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def valid_name(name: str) -> bool:
    """Whether C{name} may name a backend: 1-64 letters, digits, '_', '.', '-'."""
    return _NAME.fullmatch(name) is not None


def _backend(
    filename: str,
    section: str,
    items: Mapping[str, str],
    seen: dict[Address, str],
    health: HealthConfig,
) -> BackendConfig:
    name = section[len(_BACKEND_PREFIX) :].strip()
    if not valid_name(name):
        raise ConfigError(
            filename,
            "backend name must be 1-64 letters, digits, '_', '.' or '-'",
            section,
        )
    values = _read(filename, section, items, _BACKEND_KEYS)
    if "address" not in values:
        raise ConfigError(
            filename,
            "missing; expected " + _BACKEND_KEYS["address"].allowed,
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
    health = _health_overrides(filename, section, values, health)
    return BackendConfig(name=name, health=health, **values)


def parse_backend(
    name: str, items: Mapping[str, str], config: Config, source: str, where: str
) -> BackendConfig:
    """
    One backend given as the keys of a ``[backend:NAME]`` section, checked
    exactly as lb.ini's are (the admin API adds backends with it).

    @param where: what names the input in an error, in place of a file.
    @raise ConfigError: the same one-line error lb.ini would get.
    """
    section = _BACKEND_PREFIX + name
    spec = _backend(where, section, items, {}, config.health)
    if config.mode != "tcp" and spec.proxy_protocol != "none":
        raise ConfigError(
            where,
            "needs mode = tcp (HTTP mode sends X-Forwarded-For instead)",
            section,
            "proxy_protocol",
        )
    return attrs.evolve(spec, source=source)


_SHARED_KEYS = {name: spec for name, spec in _BACKEND_KEYS.items() if name != "address"}


def _discovery(
    filename: str, section: str, items: Mapping[str, str], health: HealthConfig
) -> DiscoveryConfig:
    name = section[len(_DISCOVERY_PREFIX) :].strip()
    if not valid_name(name):
        raise ConfigError(
            filename,
            "discovery name must be 1-64 letters, digits, '_', '.' or '-'",
            section,
        )

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(filename, why, section, key)

    common, typed, rest = read_section(items, _SHARED_KEYS, fail)
    values = _read(filename, section, rest, _SHARED_KEYS)
    backend = BackendConfig(
        name="",
        address=Address("", 0),
        source=f"{common.type}:{name}",
        health=_health_overrides(filename, section, values, health),
        **values,
    )
    return DiscoveryConfig(
        name=name,
        common=common,
        backend=backend,
        dns=typed if isinstance(typed, DNSConfig) else None,
        ec2=typed if isinstance(typed, EC2Config) else None,
    )


def _health_overrides(
    filename: str, section: str, values: dict[str, Any], health: HealthConfig
) -> HealthConfig:
    """Take the C{health_KEY} values out of C{values}, applied to C{health}."""
    overrides = {
        key[len(_HEALTH_OVERRIDE) :]: values.pop(key)
        for key in list(values)
        if key.startswith(_HEALTH_OVERRIDE)
    }
    if overrides:
        health = attrs.evolve(health, **overrides)
        _check_health(filename, section, _HEALTH_OVERRIDE, health)
    return health


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
