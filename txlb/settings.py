"""
The ``[txlb]`` keys, grouped by the part that reads them: the front end's
L{ClientConfig}, the proxies' L{ProxyConfig}, the registry's
L{BalancingConfig}, the HTTP proxy's L{AffinityConfig} and the stats'
L{ObserveConfig}; and the ``[ratelimit]`` section's L{RateLimitConfig}.
Each key is declared once, here (L{txlb.schema.key}); L{txlb.config} reads
them.
"""

from __future__ import annotations

import math

import attrs

from txlb import schema
from txlb.core.algorithms import POLICIES
from txlb.requestkey import (
    HASH_KEYS,
    LIMIT_KEYS,
    RequestKey,
    request_key,
    sticky_cookie,
)
from txlb.schema import DURATION, POSITIVE_DURATION, Network, key, one_of

__all__ = [
    "ALGORITHMS",
    "AffinityConfig",
    "BalancingConfig",
    "ClientConfig",
    "ObserveConfig",
    "ProxyConfig",
    "RateLimitConfig",
]

ALGORITHMS = tuple(POLICIES)
LOG_FORMATS = ("combined", "json")


@attrs.frozen
class ClientConfig:
    """
    What a client may send, and how slowly: the front end's deadlines and
    limits (``[txlb]``).
    """

    header_timeout: float = key(
        10.0,
        schema.positive_duration,
        POSITIVE_DURATION + "; the whole request head must arrive within it, else 408",
    )
    body_timeout: float = key(
        60.0,
        schema.positive_duration,
        POSITIVE_DURATION + "; the request body must arrive within it, plus 1s per"
        " body_min_rate bytes received, else 408",
    )
    body_min_rate: int = key(
        1024,
        schema.count,
        "bytes per second, 0 (body_timeout is the whole body's deadline) or more",
    )
    keepalive_timeout: float = key(
        60.0,
        schema.positive_duration,
        POSITIVE_DURATION + "; an idle client connection between requests is"
        " closed after it",
    )
    client_timeout: float = key(
        60.0,
        schema.positive_duration,
        POSITIVE_DURATION + "; a client that reads none of its response for that"
        " long is disconnected",
    )
    max_clients: int = key(
        10000,
        schema.positive_count,
        "a whole number, 1 or more: client connections at once (more are refused)",
    )
    max_header_size: int = key(
        32768,
        schema.positive_size,
        "a size such as 32k or 32768 (bytes): the request head's limit, else 431",
    )
    max_uri_length: int = key(
        8192,
        schema.positive_size,
        "a size such as 8k or 8192 (bytes): the request target's limit, else 414",
    )
    max_body_size: int = key(
        0,
        schema.parse_size,
        "0 (unlimited) or a size such as 10m or 1048576 (bytes), else 413",
    )


@attrs.frozen
class ProxyConfig:
    """How requests and connections reach backends (``[txlb]``)."""

    connect_timeout: float = key(3.0, schema.positive_duration, POSITIVE_DURATION)
    backend_timeout: float = key(30.0, schema.positive_duration, POSITIVE_DURATION)
    idle_timeout: float = key(
        600.0,
        schema.parse_duration,
        "0 (never) or " + DURATION + "; closes a TCP-mode connection or WebSocket"
        " with no byte either way for that long",
    )
    retries: int = key(2, schema.count, "a whole number, 0 or more")
    retry_budget: int = key(
        50,
        schema.percent,
        "a percentage, 0 to 100, of the last 10 seconds' requests",
    )
    min_retries_per_second: int = key(
        10,
        schema.count,
        "a whole number, 0 or more: retries a second the budget always allows",
    )
    idle_pool_size: int = key(64, schema.count, "a whole number, 0 or more")
    trusted_proxies: tuple[Network, ...] = key(
        (),
        schema.networks,
        "empty (trust no one) or a comma list of addresses and networks whose"
        " X-Forwarded-For is believed, e.g. 127.0.0.1, 10.0.0.0/8, ::1",
    )


def _balance_factor(text: str) -> float:
    value = float(text.strip())
    if value != 0 and not 1 <= value <= 100:
        raise ValueError(text)
    return value


@attrs.frozen
class BalancingConfig:
    """How the registry picks a backend, and how requests wait (``[txlb]``)."""

    algorithm: str = key("least_conn", schema.choice(ALGORITHMS), one_of(ALGORITHMS))
    ewma_decay: float = key(10.0, schema.positive_duration, POSITIVE_DURATION)
    panic_threshold: int = key(
        0, schema.percent, "a percentage of healthy backends, 0 (off) to 100"
    )
    queue_size: int = key(
        1024,
        schema.count,
        "a whole number, 0 (no queue: 503 at once) or more; requests waiting"
        " for a backend below its max_connections",
    )
    queue_timeout: float = key(5.0, schema.positive_duration, POSITIVE_DURATION)
    drain_timeout: float = key(
        300.0,
        schema.parse_duration,
        "0 (wait until idle) or " + DURATION + "; a removed backend still busy"
        " after it is dropped and its connections closed",
    )
    hash_key: RequestKey = key(
        RequestKey("client_ip"),
        request_key(HASH_KEYS),
        one_of(HASH_KEYS) + " (tcp mode: client_ip only)",
    )
    hash_balance_factor: float = key(
        1.25,
        _balance_factor,
        "0 (no bound) or a number from 1 to 100: with algorithm = hash, no backend"
        " takes more than this times the mean load (weighted)",
    )


@attrs.frozen
class AffinityConfig:
    """Sticky sessions: a cookie that keeps a client on its backend (``[txlb]``)."""

    sticky: RequestKey | None = key(
        None, sticky_cookie, "empty (off) or cookie:NAME, e.g. cookie:TXLB"
    )
    sticky_max_age: float = key(
        0.0,
        schema.parse_duration,
        "0 (the cookie lasts the browser session) or " + DURATION,
    )


@attrs.frozen
class ObserveConfig:
    """The access log, the stats API and the admin actions (``[txlb]``)."""

    access_log: str = key(
        "", schema.text, "empty (off), - for standard output, or a file path"
    )
    access_log_format: str = key(
        "combined", schema.choice(LOG_FORMATS), one_of(LOG_FORMATS)
    )
    admin_token_file: str = key(
        "",
        schema.text,
        "empty (admin actions off) or the path of a file holding the admin token",
    )
    events_rate: float = key(
        2.0,
        schema.bounded(0, 20),
        "server-sent events per second on /api/events, above 0 and at most 20",
    )


@attrs.frozen
class RateLimitConfig:
    """
    A token bucket per client (``[ratelimit]``): C{rate} requests a second,
    C{burst} at once.  Off while C{rate} is 0.
    """

    rate: float = key(
        0.0,
        schema.bounded(0, 1_000_000),
        "requests a second per client, above 0 (e.g. 10 or 0.5)",
    )
    burst: int = key(
        0,
        schema.count,
        "a whole number of requests a client may send at once, 1 or more"
        " (0: rate rounded up)",
    )
    key: RequestKey = key(
        RequestKey("client_ip"), request_key(LIMIT_KEYS), one_of(LIMIT_KEYS)
    )

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    @property
    def bucket(self) -> int:
        """The requests a client may send at once: C{burst}, or C{rate} rounded up."""
        return self.burst or max(1, math.ceil(self.rate))
