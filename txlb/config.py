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
(``[outlier]``) and L{BackendConfig} (``[backend:NAME]``, those three in
L{txlb.backendconfig}), L{FleetConfig} (``[fleet]``, declared in
L{txlb.fleet.settings}).  Each part is given its own value.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from typing import Any

import attrs

from txlb import schema
from txlb.backendconfig import (
    BACKEND_PREFIX,
    SHARED_KEYS,
    BackendConfig,
    HealthConfig,
    OutlierConfig,
    check_health,
    health_overrides,
    read_backend,
    valid_name,
)
from txlb.discovery.config import CommonConfig, DNSConfig, EC2Config, read_section
from txlb.fleet.settings import FleetConfig
from txlb.schema import (
    DURATION,
    Address,
    ConfigError,
    KeySpec,
    Network,
    key,
    keys_of,
    one_of,
    parse_duration,
    parse_size,
    read_in,
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
SOURCES = ("static", "admin")
"""Where a backend came from (discovery sections add their own)."""

_DISCOVERY_PREFIX = "discovery:"


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
            top = read_in(
                filename, name, items, {k: s for k, (_, s) in _TXLB_KEYS.items()}
            )
        elif name == "health":
            health = read_in(filename, name, items, _HEALTH_KEYS)
        elif name == "outlier":
            outlier = read_in(filename, name, items, _OUTLIER_KEYS)
        elif name == "ratelimit":
            ratelimit = _ratelimit(filename, items)
        elif name == "fleet":
            fleet = read_in(filename, name, items, _FLEET_KEYS)
        elif name.startswith(BACKEND_PREFIX):
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
    check_health(filename, "health", "", health_config)
    seen_addresses: dict[Address, str] = {}
    backends = [
        read_backend(filename, name, items, seen_addresses, health_config)
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
    values = read_in(filename, "ratelimit", items, _RATELIMIT_KEYS)
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
        sections = [(BACKEND_PREFIX + b.name, b) for b in config.backends]
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


def parse_backend(
    name: str, items: Mapping[str, str], config: Config, source: str, where: str
) -> BackendConfig:
    """
    One backend given as the keys of a ``[backend:NAME]`` section, checked
    exactly as lb.ini's are (the admin API adds backends with it).

    @param where: what names the input in an error, in place of a file.
    @raise ConfigError: the same one-line error lb.ini would get.
    """
    section = BACKEND_PREFIX + name
    spec = read_backend(where, section, items, {}, config.health)
    if config.mode != "tcp" and spec.proxy_protocol != "none":
        raise ConfigError(
            where,
            "needs mode = tcp (HTTP mode sends X-Forwarded-For instead)",
            section,
            "proxy_protocol",
        )
    return attrs.evolve(spec, source=source)


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

    common, typed, rest = read_section(items, SHARED_KEYS, fail)
    values = read_in(filename, section, rest, SHARED_KEYS)
    backend = BackendConfig(
        name="",
        address=Address("", 0),
        source=f"{common.type}:{name}",
        health=health_overrides(filename, section, values, health),
        **values,
    )
    return DiscoveryConfig(
        name=name,
        common=common,
        backend=backend,
        dns=typed if isinstance(typed, DNSConfig) else None,
        ec2=typed if isinstance(typed, EC2Config) else None,
    )


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
