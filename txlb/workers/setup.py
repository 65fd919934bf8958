"""
How the supervisor of C{workers = N} is put together (L{supervise}): the
listening sockets bound once for every worker, the stats app served here
(on C{stats_listen}, or on a UNIX socket the workers send its paths to),
the shared counts read back ten times a second, reloads passed on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.web.server import Site

from txlb.config import Config, ConfigError
from txlb.core.registry import Registry
from txlb.lifecycle.reload import Reloader
from txlb.lifecycle.shutdown import Lifecycle
from txlb.observe import features, jsonlog
from txlb.observe.webapp import StatsApp
from txlb.workers.buckets import SharedBuckets
from txlb.workers.features import SummedLimiter, SummedSticky
from txlb.workers.supervisor import WorkerPool

__all__ = ["supervise"]

REFRESH = 0.1
"""Seconds between two readings of the shared counts by the supervisor."""


class _QuietSite(Site):
    """The stats app without twisted.web's log line per request."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


class _NoAccept(Factory):
    """The factory of a listening port only workers accept on."""

    noisy = False


class _Runtime(Service):
    """The supervisor's own directory (its socket, the running config)."""

    def __init__(self) -> None:
        base = os.environ.get("RUNTIME_DIRECTORY") or None
        self.path = Path(tempfile.mkdtemp(prefix="txlb-", dir=base))

    def stopService(self) -> None:
        super().stopService()
        shutil.rmtree(self.path, ignore_errors=True)


def _bind(reactor: Any, config: Config, description: str) -> Any:
    """A listening port for the workers, bound now (an error stops start-up)."""
    ports: list[Any] = []
    errors: list[Any] = []
    d = serverFromString(reactor, description).listen(_NoAccept())
    d.addCallbacks(ports.append, errors.append)
    if errors or not ports:
        why = errors[0].getErrorMessage() if errors else "not bound at once"
        raise ConfigError(
            config.filename,
            f"cannot listen on {description!r}: {why}",
            "txlb",
            "listen",
        )
    return ports[0]


def supervise(
    reactor: Any,
    config: Config,
    path: str,
    registry: Registry,
    app: StatsApp,
    reloader: Reloader,
    top: MultiService,
) -> WorkerPool:
    """
    Make this process the supervisor of C{config.workers} workers.

    @param path: the configuration file (its text is what the workers run).
    """
    runtime = _Runtime()
    runtime.setServiceParent(top)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    listeners = [_bind(reactor, config, d) for d in config.listen]
    stats = app.resource()
    stats_socket = ""
    if config.stats_listen:
        endpoint = serverFromString(reactor, config.stats_listen)
        service = StreamServerEndpointService(
            endpoint, _QuietSite(stats, reactor=reactor)
        )
        service._raiseSynchronously = True
        service.setServiceParent(top)
        if isinstance(top, Lifecycle):
            # Open through the drain: /healthz says 503 there while it lasts.
            top.listen_until_drained(service)
    else:
        stats_socket = str(runtime.path / "stats.sock")
        reactor.listenUNIX(stats_socket, _QuietSite(stats, reactor=reactor))
    pool = WorkerPool(
        reactor,
        registry,
        config.workers,
        listeners,
        text,
        config.filename,
        runtime.path,
        app.observe,
        stats_socket=stats_socket,
        json_log=jsonlog.in_use(),
        buckets=SharedBuckets.create(reactor) if config.ratelimit.enabled else None,
    )
    _show_features(app, registry, config, pool)
    pool.setServiceParent(top)
    refresher = TimerService(REFRESH, pool.refresh)
    refresher.clock = reactor
    refresher.setServiceParent(top)
    app.stats.clients = pool.clients
    app.stats.refresh = app.metrics.collector.refresh = pool.refresh
    app.stats.workers = pool.view
    app.decisions_source = pool.decisions

    def queue(new: Config) -> None:
        pool.queue_configured(new.balancing.queue_size, new.balancing.queue_timeout)

    reloader.after.append(queue)
    return pool


def _show_features(
    app: StatsApp, registry: Registry, config: Config, pool: WorkerPool
) -> None:
    """The views show the hash ring (the same in every process) and the
    workers' sticky-cookie and rate-limit counts, summed."""
    sticky = config.affinity.sticky
    summed_sticky = None
    if sticky is not None:
        summed_sticky = SummedSticky(pool.features, sticky.name)
    limiter = None
    if pool.buckets is not None:
        limiter = SummedLimiter(pool.features, config.ratelimit, pool.buckets)
    features.show(app, registry, summed_sticky, limiter)
