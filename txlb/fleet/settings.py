"""
The ``[fleet]`` keys (L{FleetConfig}) and the Redis URL they name.  Pure:
the default node name (this host's) is resolved at start-up, by
L{node_name}.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import attrs

from txlb import schema
from txlb.schema import key

__all__ = ["FleetConfig", "RedisURL", "node_name", "redis_url"]

TTL_INTERVALS = 2.5
"""
A node's entry expires this many intervals after it was written: a live
node refreshes it every interval, so only one more than 1.5 intervals late
lapses; a node killed is forgotten by its peers within 2.5 intervals (and
so within three, whatever the moment it died).
"""

_NODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
NODE_RULE = "1-64 letters, digits, '_', '.' or '-'"


@attrs.frozen
class RedisURL:
    """Where the fleet's Redis is: C{redis://[:PASSWORD@]HOST:PORT/DB}."""

    host: str
    port: int = 6379
    db: int = 0
    password: str | None = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        """The URL without its password (for logs and the dashboard)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def redis_url(text: str) -> RedisURL:
    """
    Parse C{redis://HOST:PORT/DB} (port 6379 and DB 0 by default; a
    password as C{redis://:PASSWORD@HOST...}).

    @raise ValueError: anything else (C{rediss://} too: no TLS).
    """
    parts = urlsplit(text.strip())
    if parts.scheme != "redis" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(text)
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(text) from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(text)
    if parts.username:
        raise ValueError(text)  # Redis 6 ACL users: not supported
    password = unquote(parts.password) if parts.password else None
    return RedisURL(parts.hostname, port, int(path or 0), password)


def _node(text: str) -> str:
    value = text.strip()
    if value and _NODE.fullmatch(value) is None:
        raise ValueError(text)
    return value


def _interval(text: str) -> float:
    value = schema.parse_duration(text)
    if not 0.01 <= value <= 10:
        raise ValueError(text)
    return value


@attrs.frozen
class FleetConfig:
    """
    Sharing load and ejections with the other balancers of a fleet
    (``[fleet]``; off without a C{redis}).
    """

    redis: RedisURL | None = key(
        None,
        redis_url,
        "redis://HOST:PORT/DB, e.g. redis://10.0.0.5:6379/0"
        " (a password as redis://:PASSWORD@HOST:PORT/DB; no rediss://)",
    )
    node: str = key(
        "",
        _node,
        f"this balancer's name in the fleet: {NODE_RULE} (default: the host name)",
    )
    interval: float = key(
        0.1,
        _interval,
        "a duration from 10ms to 10s, e.g. 100ms: how often each node"
        " publishes and reads",
    )

    @property
    def ttl(self) -> float:
        """How long a node's entry outlives its last write (L{TTL_INTERVALS})."""
        return self.interval * TTL_INTERVALS


def node_name(config: FleetConfig, hostname: Callable[[], str] | None = None) -> str:
    """
    The node's name: C{node}, else this host's name.

    @raise ValueError: the host's name cannot name a node (in words).
    """
    if config.node:
        return config.node
    name = (hostname or socket.gethostname)()
    if _NODE.fullmatch(name) is None:
        raise ValueError(
            f"this host's name {name!r} cannot name a node ({NODE_RULE}): set node"
        )
    return name
