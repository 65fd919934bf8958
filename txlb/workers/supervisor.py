"""
C{[txlb] workers = N}: the twistd process becomes the supervisor of N worker
processes (L{txlb.workers.worker}).

The supervisor binds the listening sockets (or takes systemd's), and every
worker accepts on its copy of each, with its own reactor: the kernel hands
each new connection to a worker that is waiting for one, which under load
is the least busy (measured in README, "Worker processes").  The
supervisor keeps what is the balancer's, once: the registry and its
changes (lb.ini and reloads, the admin API), the health checker, passive
outlier detection (fed by every worker's results), slow start, the stats,
the metrics and the dashboard.  A worker that dies is restarted at once,
its share of the counts cleared so no lease leaks; SIGTERM drains every
worker.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import txlb
from txlb.core.registry import Registry
from txlb.workers import protocol as commands
from txlb.workers.fanout import Fanout
from txlb.workers.shm import Counts

__all__ = ["WorkerPool"]

_FIRST_FD = 5
"""Listening sockets start at this descriptor in a worker (see L{_spawn})."""

_ALL_READY_WITHIN = 15.0
"""At start-up, the workers ready begin without the others after this long."""

_QUICK_DEATH = 1.0
"""A worker that dies sooner than this after starting is restarted slowly."""


class _WorkerLink(commands.QuietAMP):
    """The supervisor's AMP connection to one worker."""

    def __init__(self, handle: _Worker) -> None:
        super().__init__()
        self.handle = handle

    @commands.Hello.responder
    def hello(self, worker: int, pid: int) -> dict[str, Any]:
        pool = self.handle.pool
        pool.reactor.callLater(0, pool.introduced, self.handle)
        return {"path": str(pool.running_config), "filename": pool.filename}

    @commands.Observed.responder
    def observed(self, batch: bytes) -> dict[str, Any]:
        self.handle.pool.observed(self.handle, batch)
        return {}

    @commands.Outcome.responder
    def outcome(self, slot: int, failed: bool, why: str) -> dict[str, Any]:
        backend = self.handle.pool.fanout.backend(slot)
        if backend is not None:
            self.handle.pool.registry.outcome(backend, failed, why)
        return {}

    @commands.Heartbeat.responder
    def heartbeat(self, info: str) -> dict[str, Any]:
        self.handle.beat(json.loads(info))
        return {}


class _Process(ProcessProtocol):
    def __init__(self, handle: _Worker) -> None:
        self.handle = handle

    def processEnded(self, reason: Failure) -> None:
        self.handle.ended(reason)


class _Worker:
    """One worker slot: its process (restarted when it dies) and its numbers."""

    log = Logger()

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.link: _WorkerLink | None = None
        self.pid = 0
        self.process: Any = None
        self.started = 0.0
        self.restarts = 0
        self.responses = 0
        self.info: dict[str, Any] = {}
        self.ready = False
        self._cpu = (0.0, 0.0)  # (time, cpu seconds) at the last heartbeat
        self.cpu_percent = 0.0
        self._rates: list[tuple[float, int]] = []
        self._ended: Deferred[None] | None = None

    def spawn(self) -> None:
        """
        Start the worker.  Its descriptors: 0 a pipe, 1 and 2 the
        supervisor's stdout and stderr (one log), 3 the control socket, 4
        the shared counts, 5 on the listening sockets.
        """
        pool = self.pool
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent.setblocking(False)
        self.link = link = _WorkerLink(self)
        pool.reactor.adoptStreamConnection(
            parent.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: link)
        )
        parent.close()
        fds: dict[int, Any] = {0: "w", 1: 1, 2: 2, 3: child.fileno(), 4: pool.counts.fd}
        argv = [
            sys.executable,
            "-m",
            "txlb.workers.worker",
            "--index",
            str(self.index),
            "--workers",
            str(len(pool.workers)),
            "--control-fd",
            "3",
            "--counts-fd",
            "4",
        ]
        for n, (fd, family) in enumerate(pool.listening()):
            fds[_FIRST_FD + n] = fd
            argv += ["--listen", f"{_FIRST_FD + n}:{family}"]
        if pool.stats_socket:
            argv += ["--stats-socket", pool.stats_socket]
        if pool.json_log:
            argv.append("--json-log")
        self.process = pool.reactor.spawnProcess(
            _Process(self), sys.executable, argv, env=pool.environment(), childFDs=fds
        )
        child.close()
        self.pid = self.process.pid
        self.started = pool.reactor.seconds()
        self._cpu = (self.started, 0.0)

    def beat(self, info: dict[str, Any]) -> None:
        now = self.pool.reactor.seconds()
        then, cpu = self._cpu
        if now > then:
            self.cpu_percent = 100 * (info["cpu_seconds"] - cpu) / (now - then)
        self._cpu = (now, info["cpu_seconds"])
        self.info = info

    def counted(self, responses: int) -> None:
        self.responses += responses
        now = self.pool.reactor.seconds()
        rates = self._rates
        rates.append((now, self.responses))
        while rates and now - rates[0][0] > 5:
            rates.pop(0)

    @property
    def rps(self) -> float:
        rates = self._rates
        if len(rates) < 2 or rates[-1][0] <= rates[0][0]:
            return 0.0
        return (rates[-1][1] - rates[0][1]) / (rates[-1][0] - rates[0][0])

    def ended(self, reason: Failure) -> None:
        pool = self.pool
        self.link = None
        self.ready = False
        self.info = {}
        self.process = None
        pool.fanout.worker_gone(self.index)
        ended, self._ended = self._ended, None
        if ended is not None:
            ended.callback(None)
            return
        lived = pool.reactor.seconds() - self.started
        delay = 0.0 if lived > _QUICK_DEATH else min(30.0, 0.5 * 2**self.restarts)
        self.restarts += 1
        self.log.warn(
            "worker {index} (pid {pid}) ended ({why}); restarting it in {delay:g}s",
            index=self.index,
            pid=self.pid,
            why=reason.getErrorMessage(),
            delay=delay,
        )
        pool.reactor.callLater(delay, self._respawn)

    def _respawn(self) -> None:
        if self.pool.running:
            self.spawn()

    def stop(self) -> Deferred[None]:
        """SIGTERM it (it drains); fires once it has ended."""
        if self.process is None:
            return succeed(None)
        self._ended = Deferred()
        try:
            self.process.signalProcess("TERM")
        except OSError:
            pass
        return self._ended

    def view(self) -> dict[str, Any]:
        """What the Workers panel shows of this worker."""
        info = self.info
        pool = self.pool
        slots = list(pool.fanout.slots)
        return {
            "index": self.index,
            "pid": self.pid,
            "alive": self.process is not None,
            "serving": self.process is not None and bool(info),
            "uptime": round(pool.reactor.seconds() - self.started, 1),
            "restarts": self.restarts,
            "in_flight": sum(pool.counts.column(self.index, slots).values()),
            "rps": round(self.rps, 1),
            "responses": self.responses,
            "cpu_percent": round(self.cpu_percent, 1),
            "connections": info.get("connections", 0),
            "drift_max": info.get("drift_max", 0),
            "drift_mean": round(info.get("drift_mean", 0.0), 4),
            "drift_samples": info.get("drift_samples", 0),
        }


class WorkerPool(Service):
    """
    The supervisor's workers (see the module docstring).

    @ivar observe: the stats' and metrics' per-request hook, fed with every
        worker's observations.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        registry: Registry,
        count: int,
        listeners: list[Any],
        config_text: str,
        filename: str,
        runtime: Path,
        observe: Any,
        stats_socket: str = "",
        json_log: bool = False,
    ) -> None:
        """
        @param listeners: the listening ports (IListeningPort, bound but not
            accepting in this process): every worker accepts on them.
        @param config_text: the configuration the workers run with.
        @param runtime: a directory of the supervisor's own.
        @param stats_socket: a UNIX socket serving the stats app, where
            workers send its paths (empty: stats_listen serves it).
        """
        self.reactor = reactor
        self.registry = registry
        self.counts = Counts.create(count)
        self.workers = [_Worker(self, i) for i in range(count)]
        self.fanout = Fanout(registry, self.counts, self._links)
        self._listeners = listeners
        self.filename = filename
        self.running_config = runtime / "running.ini"
        self.running_config.write_text(config_text, encoding="utf-8")
        self.observe = observe
        self._started_all = False
        self.stats_socket = stats_socket
        self.json_log = json_log
        registry.subscribe(self.fanout)

    def _links(self) -> Iterator[_WorkerLink]:
        for worker in self.workers:
            if worker.link is not None:
                yield worker.link

    def listening(self) -> Iterator[tuple[int, int]]:
        """Each listening socket's descriptor and address family."""
        for port in self._listeners:
            yield port.fileno(), port.socket.family

    def environment(self) -> dict[str, str]:
        """The workers' environment: ours, and this txlb on their path."""
        env = dict(os.environ)
        here = str(Path(txlb.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, env.get("PYTHONPATH", "")) if p
        )
        return env

    def startService(self) -> None:
        super().startService()
        for port in self._listeners:
            port.stopReading()  # the workers accept, not the supervisor
        for worker in self.workers:
            worker.spawn()
        self.reactor.callLater(_ALL_READY_WITHIN, self._start_anyway)
        self.log.info(
            "supervising {count} workers: {pids}",
            count=len(self.workers),
            pids=", ".join(str(w.pid) for w in self.workers),
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        for port in self._listeners:
            port.stopListening()
        return DeferredList([worker.stop() for worker in self.workers])

    def introduced(self, worker: _Worker) -> None:
        """
        A worker said hello: tell it every backend.  At start-up the workers
        begin accepting together, once all are ready (the first one up
        would otherwise take every connection already waiting); a worker
        restarted later begins at once.
        """
        if worker.link is None:
            return
        self.fanout.replay(worker.link)
        worker.ready = True
        if self._started_all:
            worker.link.callRemote(commands.Start)
        elif all(w.ready for w in self.workers):
            self._started_all = True
            for link in self._links():
                link.callRemote(commands.Start)

    def _start_anyway(self) -> None:
        """Those ready begin, if one worker is still not up by now."""
        if self._started_all or not self.running:
            return
        self._started_all = True
        late = [w.index for w in self.workers if not w.ready]
        self.log.warn("workers {late} not ready yet: the others begin", late=late)
        for worker in self.workers:
            if worker.ready and worker.link is not None:
                worker.link.callRemote(commands.Start)

    def observed(self, worker: _Worker, batch: bytes) -> None:
        """A worker's finished requests, for the stats and the metrics."""
        values = array("d")
        values.frombytes(batch)
        backend = self.fanout.backend
        observe = self.observe
        for i in range(0, len(values), 3):
            found = backend(int(values[i]))
            if found is not None:
                observe(found, int(values[i + 1]), values[i + 2])
        worker.counted(len(values) // 3)

    def refresh(self) -> None:
        self.fanout.refresh()
        # The decisions API's count of picks: the workers make them.
        picks = sum(int(w.info.get("picks", 0)) for w in self.workers)
        self.registry.selector.picks = picks

    def queue_configured(self, size: int, timeout: float) -> None:
        """A reload changed the queue: every worker applies it."""
        for link in self._links():
            link.callRemote(commands.Queue, size=size, timeout=timeout)

    def clients(self) -> dict[str, int]:
        """The client side's counters, every worker's."""
        found = {"connections": 0, "refused": 0, "rejected": 0}
        for worker in self.workers:
            for key in found:
                found[key] += int(worker.info.get(key, 0))
        return found

    def view(self) -> list[dict[str, Any]]:
        return [worker.view() for worker in self.workers]

    def decisions(self, limit: int) -> Deferred[list[dict[str, Any]]]:
        """Every worker's latest decisions, newest first."""

        def merged(results: list[tuple[bool, Any]]) -> list[dict[str, Any]]:
            found = []
            for worker, (ok, answer) in zip(self.workers, results, strict=False):
                if ok:
                    for decision in json.loads(answer["decisions"]):
                        decision["worker"] = worker.index
                        found.append(decision)
            found.sort(key=lambda d: d["time"], reverse=True)
            return found[:limit]

        calls = [
            link.callRemote(commands.Decisions, limit=limit) for link in self._links()
        ]
        return DeferredList(calls, consumeErrors=True).addCallback(merged)
