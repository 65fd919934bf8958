"""
The real sources (what C{tap} gives the discovery sections): a
C{twisted.names} resolver per set of resolvers, and boto3 in a dedicated
thread pool; and the start-up checks that need the machine (is boto3
there, is there a region), so that a section that cannot work stops
start-up (and a reload) with one line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IResolver
from twisted.internet.threads import deferToThreadPool
from twisted.names import client
from twisted.python.threadpool import ThreadPool

from txlb.config import Config, ConfigError, DiscoveryConfig, load
from txlb.discovery.dns import DNSSource
from txlb.discovery.ec2 import Boto3Client, EC2Source, default_region, missing_boto3
from txlb.discovery.source import IDiscoverySource
from txlb.schema import Address

__all__ = ["RealSources", "check", "checked_load"]

THREADS = 2
"""Threads for AWS calls, shared by every ec2 section."""


def _daemon_thread(**kwargs: Any) -> threading.Thread:
    return threading.Thread(daemon=True, **kwargs)


class _Pool(ThreadPool):
    """
    Daemon threads, stopped without waiting: an AWS call still out at
    shutdown (up to its timeouts) must not hold the process up.
    """

    threadFactory = staticmethod(_daemon_thread)  # type: ignore[assignment]


class RealSources(Service):
    """
    Makes each section's source; as a service it runs the thread pool
    the AWS calls use (started with txlb, stopped at shutdown).
    """

    def __init__(self, reactor: Any, resolv: str = "/etc/resolv.conf") -> None:
        self._reactor = reactor
        self._resolv = resolv
        self._pool: ThreadPool | None = None
        self._resolvers: dict[tuple[Address, ...], IResolver] = {}

    def __call__(self, config: DiscoveryConfig) -> IDiscoverySource:
        port = config.common.port
        if config.dns is not None:
            resolver = self._resolver(config.dns.resolvers)
            return DNSSource(config.dns, port, resolver)
        assert config.ec2 is not None
        ec2 = config.ec2
        return EC2Source(ec2, port, Boto3Client(ec2.region, ec2.endpoint_url), self.run)

    def _resolver(self, servers: tuple[Address, ...]) -> IResolver:
        found = self._resolvers.get(servers)
        if found is None:
            if servers:
                found = client.Resolver(
                    servers=[(s.host, s.port) for s in servers], reactor=self._reactor
                )
            else:
                # The system's, re-read when /etc/resolv.conf changes.
                found = client.Resolver(resolv=self._resolv, reactor=self._reactor)
            self._resolvers[servers] = found
        return found

    def run(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Call C{f} in the discovery thread pool."""
        if self._pool is None:
            self._pool = _Pool(0, THREADS, "txlb-discovery")
            if self.running:
                self._pool.start()
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def startService(self) -> None:
        super().startService()
        if self._pool is not None and not self._pool.started:
            self._pool.start()

    def stopService(self) -> None:
        super().stopService()
        pool, self._pool = self._pool, None
        if pool is not None:
            # stop() joins the threads: in a thread of its own, not the reactor's.
            _daemon_thread(target=pool.stop, name="txlb-discovery-stop").start()


def check(config: Config) -> None:
    """
    What a discovery section needs of the machine: boto3 and a region for
    C{type = ec2}.

    @raise ConfigError: one line naming the section and key.
    """
    for section in config.discoveries:
        if section.ec2 is None:
            continue
        where = f"discovery:{section.name}"
        missing = missing_boto3()
        if missing:
            raise ConfigError(config.filename, missing, where, "type")
        if not section.ec2.region and default_region() is None:
            raise ConfigError(
                config.filename,
                "no region: set region, or AWS_REGION or AWS_DEFAULT_REGION",
                where,
                "region",
            )


def checked_load(path: str) -> Config:
    """L{txlb.config.load}, then L{check} (start-up and each reload)."""
    config = load(path)
    check(config)
    return config
