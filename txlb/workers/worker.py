"""
One worker process: C{python -m txlb.workers.worker}, started by the
supervisor (L{txlb.workers.supervisor}), never by hand.

A worker serves clients on the listening sockets it inherits, with its own
reactor, front end and proxy, and a replica of the supervisor's registry:
the supervisor tells it the configuration in force, every backend and every
change of state (L{txlb.workers.protocol}); the worker keeps its requests in
flight in the shared counts (L{txlb.workers.counting}), so its picks judge
the whole balancer, and sends the supervisor what the stats, the metrics
and passive outlier detection need.  SIGTERM drains it as it drains a
single process.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from txlb.config import Address, Config, parse
from txlb.core.registry import Registry
from txlb.http.proxy import HTTPProxy
from txlb.http.routing import Router
from txlb.http.upstream import BackendPool
from txlb.lifecycle.gctune import tune_gc
from txlb.lifecycle.shutdown import Lifecycle
from txlb.net import fastio
from txlb.observe.accesslog import AccessLog
from txlb.tcp.proxy import TCPProxy, TCPProxyFactory
from txlb.workers.accepting import SWEEP, CountedConnections, balance_accepts
from txlb.workers.buckets import SharedBuckets
from txlb.workers.counting import WorkerCounts
from txlb.workers.features import counts_of
from txlb.workers.forward import StatsForward
from txlb.workers.replica import Replica, SupervisorLink
from txlb.workers.shm import Counts

__all__ = ["main"]

_log = Logger(namespace="txlb.workers.worker")

QUEUE_POLL = 0.005
"""Seconds between two looks for a slot freed elsewhere, while requests wait."""


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m txlb.workers.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--counts-fd", type=int, required=True)
    parser.add_argument(
        "--listen", action="append", default=[], help="FD:FAMILY of a listener"
    )
    parser.add_argument("--buckets-fd", type=int, default=-1)
    parser.add_argument("--stats-socket", default="")
    parser.add_argument("--json-log", action="store_true")
    return parser.parse_args(argv)


class Worker:
    """What one worker process runs (see the module docstring)."""

    def __init__(self, reactor: Any, arguments: argparse.Namespace) -> None:
        self.reactor = reactor
        self.arguments = arguments
        self.index = arguments.index
        self.top: MultiService | None = None
        self.link = SupervisorLink(self)
        self.replica: Replica | None = None
        self.front: Any = None
        self.proxy: HTTPProxy | None = None
        self._ports: list[Any] = []
        self._stopping = False

    def start(self) -> None:
        """Connect to the supervisor; the rest follows its answer."""
        self.reactor.adoptStreamConnection(
            self.arguments.control_fd, socket.AF_UNIX, self.link.as_factory()
        )
        os.close(self.arguments.control_fd)

    def configured(self, path: str, filename: str) -> None:
        """The supervisor's answer to hello: build everything, not yet listening."""
        with open(path, encoding="utf-8") as f:
            config = parse(f.read(), filename)
        reactor = self.reactor
        registry = Registry(config.balancing, config.outlier, reactor)
        registry.quiet = True
        self.counts = counts = Counts(self.arguments.counts_fd, self.arguments.workers)
        self.connections = CountedConnections(counts, self.index)
        shared = WorkerCounts(counts, self.index, registry.selector, reactor)
        registry.selector.share(shared)
        self.replica = Replica(registry, shared, self.link)
        registry.outcomes = self.replica
        self._share_queue(registry, counts)
        self.top = top = Lifecycle(reactor, config.shutdown_timeout)
        access_log = self._access_log(config, top)
        observe = self.link.observations.add
        if config.mode == "tcp":
            tcp = TCPProxy.from_config(config, registry, reactor, reactor, observe)
            tcp.connections = self.connections
            self.front = TCPProxyFactory(tcp)
            self.limit = tcp.limit
        else:
            buckets = None
            if self.arguments.buckets_fd >= 0:
                buckets = SharedBuckets(self.arguments.buckets_fd, reactor)
            proxy = HTTPProxy.from_config(
                config, registry, reactor, reactor, access_log, observe, buckets
            )
            self.proxy = proxy
            stats = None
            if self.arguments.stats_socket:
                pool = BackendPool(
                    reactor,
                    reactor,
                    Address(self.arguments.stats_socket, 0),
                    config.proxy.connect_timeout,
                    8,
                )
                stats = lambda request: StatsForward(request, pool)  # noqa: E731
            from txlb.http.frontend import HTTPFrontendFactory

            self.front = HTTPFrontendFactory(
                config.client, reactor, Router(proxy, stats, reserve=True)
            )
            self.front.connections = self.connections
            self.front.idle = self.connections
            self.limit = self.front.limit
        top.watch(self.connections)
        self.heartbeat = LoopingCall(self._beat)
        self.heartbeat.clock = reactor
        self.sweeper = LoopingCall(self.connections.sweep)
        self.sweeper.clock = reactor
        top.startService()

    def _share_queue(self, registry: Registry, counts: Counts) -> None:
        """
        The queue is the balancer's: C{queue_size} counts every worker's
        waiting requests, and a slot freed in another worker (a permit given
        back) is looked for every L{QUEUE_POLL} seconds while some wait here.
        """
        queue = registry.queue
        cell = counts.queued_cell(self.index)
        index = self.index

        def published(waiting: int) -> None:
            counts.cells[cell] = waiting
            if waiting and not poll.running:
                poll.start(QUEUE_POLL, now=False)
            elif not waiting and poll.running:
                poll.stop()

        def serve() -> None:
            if queue.waiters:
                queue.serve()

        poll = LoopingCall(serve)
        poll.clock = self.reactor
        queue.elsewhere = lambda: counts.queued(but=index)
        queue.published = published

    def listen(self) -> None:
        """The supervisor has said everything: take the listening sockets."""
        for spec in self.arguments.listen:
            fd, family = (int(part) for part in spec.split(":"))
            port = self.reactor.adoptStreamPort(fd, family, self.front)
            os.close(fd)
            balance_accepts(port, self.counts, self.connections, self.reactor)
            self._ports.append(port)
        self.connections.accepting(True)
        self.sweeper.start(SWEEP, now=False)
        self.heartbeat.start(1.0, now=False)
        _log.info(
            "worker {index} (pid {pid}) serving", index=self.index, pid=os.getpid()
        )

    def _access_log(self, config: Config, top: MultiService) -> AccessLog | None:
        observe = config.observe
        if not observe.access_log:
            return None
        log = AccessLog.open(
            observe.access_log, observe.access_log_format, self.reactor, self.reactor
        )
        log.setServiceParent(top)
        return log

    def _beat(self) -> None:
        replica = self.replica
        assert replica is not None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        drift_max, drift_mean, samples = replica.shared.reset()
        self.link.heartbeat(
            {
                "connections": len(self.connections),
                "refused": self.limit.refused,
                "rejected": getattr(self.front, "rejected", 0),
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "in_flight": sum(b.active for b in replica.registry.backends),
                "picks": replica.registry.picks,
                "drift_max": drift_max,
                "drift_mean": drift_mean,
                "drift_samples": samples,
                "features": self._features(),
            }
        )

    def _features(self) -> dict[str, Any]:
        proxy = self.proxy
        if proxy is None:
            return {}
        return counts_of(proxy.sticky, proxy.limiter)

    def stop(self) -> None:
        """SIGTERM (or the supervisor gone): stop accepting, drain, exit; once."""
        if self._stopping:
            return
        self._stopping = True
        if self.replica is not None:
            self.connections.accepting(False)
        for port in self._ports:
            port.stopListening()
        top = self.top
        d = top.stopService() if top is not None else succeed(None)
        d.addBoth(self._exit)

    def _exit(self, _: object) -> None:
        if self.reactor.running:
            self.reactor.stop()


def main(argv: list[str] | None = None) -> None:
    """Run one worker until the supervisor or a signal stops it."""
    arguments = _arguments(sys.argv[1:] if argv is None else argv)
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from txlb.observe import jsonlog

    observer = (
        jsonlog.observer() if arguments.json_log else textFileLogObserver(sys.stdout)
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    fastio.install(reactor)
    worker = Worker(reactor, arguments)
    signal.signal(
        signal.SIGTERM,
        lambda *_: reactor.callFromThread(worker.stop),  # type: ignore[attr-defined]
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
    reactor.callWhenRunning(worker.start)
    reactor.callWhenRunning(tune_gc)
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]


if __name__ == "__main__":
    main()
