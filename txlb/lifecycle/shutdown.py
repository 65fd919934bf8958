"""
Graceful shutdown and configuration reload.

L{Lifecycle} is the top service: when twistd stops it (SIGTERM), the
listening ports close first, then the open client connections are drained:
an HTTP connection is closed as soon as it has no request in progress (a
keep-alive client never holds the shutdown up) and one with a request in
progress is closed when its response is done; a TCP-mode connection runs
until it ends.  Whatever is still open after C{shutdown_timeout} is aborted.
Only then do the other services (health checks, backend pools, access log)
stop, so every drained request is logged.

L{Reloader} applies a new configuration to the running balancer: backends
added (in the registry, with a pool, a health track and stats series),
removed (drained first: no new requests, those in flight finish, then
dropped), re-weighted and re-limited (C{max_connections}), and the queue
resized.  L{ReloadOnSignal} reads the file again on SIGHUP;
a file that does not parse is rejected and the running configuration stays.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Collection
from types import FrameType
from typing import Any

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from txlb.config import BackendConfig, Config, ConfigError, load
from txlb.core.registry import Backend, Registry
from txlb.health.checker import HealthChecker
from txlb.http.proxy import HTTPProxy
from txlb.http.upstream import BackendPool
from txlb.observe.webapp import StatsApp
from txlb.tcp.proxy import TCPProxy

__all__ = ["Lifecycle", "ReloadOnSignal", "Reloader"]

# How often a drain looks at the connections left.  An idle HTTP connection
# is closed once it has been idle at two looks in a row, so a request whose
# bytes were on their way when the shutdown began is still read and served.
TICK = 0.1

# The keys a reload applies; a change to any other needs a restart.
_RELOADABLE_KEYS = frozenset({"filename", "backends", "queue_size", "queue_timeout"})


def _stop_all(services: list[Any]) -> Deferred[Any]:
    return DeferredList([maybeDeferred(s.stopService) for s in services])


class Lifecycle(MultiService):
    """
    The balancer's top service: on stop, listening ports first, then a
    drain of the client connections, then everything else.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, shutdown_timeout: float) -> None:
        super().__init__()
        self._clock = clock
        self._timeout = shutdown_timeout
        self._watched: list[Collection[Any]] = []

    def watch(self, connections: Collection[Any]) -> None:
        """
        Drain C{connections} (a live collection of client protocols: HTTP
        channels, which have C{requests}, or TCP-mode protocols) at stop.
        """
        self._watched.append(connections)

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        services = list(reversed(self.services))
        listeners = [s for s in services if isinstance(s, StreamServerEndpointService)]
        rest = [s for s in services if s not in listeners]
        d = _stop_all(listeners)
        d.addCallback(lambda _: self.drain())
        d.addCallback(lambda _: _stop_all(rest))
        d.addCallback(lambda _: self._exited_cleanly())
        return d

    def _exited_cleanly(self) -> None:
        """
        A drained stop on SIGTERM is a clean exit: status 0.  (twistd would
        otherwise kill itself with the signal it got once the reactor
        stops; its reactor records that signal in C{_exitSignal}.)
        """
        if getattr(self._clock, "_exitSignal", None) == signal.SIGTERM:
            self._clock._exitSignal = None  # type: ignore[attr-defined]

    def _open(self) -> list[Any]:
        return [c for connections in self._watched for c in list(connections)]

    def drain(self) -> Deferred[None]:
        """
        Close idle connections, let busy ones finish, abort what is left
        after the timeout.

        @return: fires when no connection is left.
        """
        done: Deferred[None] = Deferred()
        clock = self._clock
        deadline = clock.seconds() + self._timeout
        open_now = self._open()
        self.log.info(
            "shutting down: listening stopped; draining {count} client"
            " connections (at most {timeout:g}s)",
            count=len(open_now),
            timeout=self._timeout,
        )
        idle_before: set[Any] = set()

        def look() -> None:
            nonlocal idle_before
            left = self._open()
            if not left:
                self.log.info("shutting down: every connection is closed")
                done.callback(None)
                return
            if clock.seconds() >= deadline:
                self.log.warn(
                    "shutting down: shutdown_timeout ({timeout:g}s) is over;"
                    " aborting {count} connections still open",
                    timeout=self._timeout,
                    count=len(left),
                )
                for connection in left:
                    connection.transport.abortConnection()
                done.callback(None)
                return
            idle_now = set()
            for connection in left:
                if _settle(connection):
                    if connection in idle_before:
                        connection.transport.loseConnection()
                    else:
                        idle_now.add(connection)
            idle_before = idle_now
            clock.callLater(min(TICK, max(0.0, deadline - clock.seconds())), look)

        look()
        return done


def _settle(connection: Any) -> bool:
    """
    Prepare one connection for closing.

    @return: whether it can be closed now (an HTTP connection with no
        proxied request in progress); one with a request in progress is
        told to close once its response is done.
    """
    settle = getattr(connection, "settle", None)
    if settle is None:
        return False  # TCP mode: runs until it ends
    return bool(settle())


@attrs.define
class Reloader:
    """
    Applies a new configuration to the running registry, proxy, health
    checker and stats.  Keys other than the backends need a restart: a
    reload says so and leaves them as they run.
    """

    _config: Config
    _registry: Registry
    _reactor: Any
    _health: HealthChecker
    _app: StatsApp
    http: HTTPProxy | None = None
    tcp: TCPProxy | None = None
    _removing: dict[Backend, None] = attrs.field(factory=dict)
    _sweep: IDelayedCall | None = None
    log = Logger()

    def reload(self, path: str, load: Callable[[str], Config] = load) -> bool:
        """
        Read the configuration at C{path} again and apply it.

        @return: whether the file was valid (and applied).
        """
        try:
            config = load(path)
        except ConfigError as e:
            self.log.error(
                "reload rejected; the running configuration stays: {error}",
                error=str(e),
            )
            return False
        self.apply(config)
        return True

    def apply(self, new: Config) -> None:
        """
        Apply C{new}: add, drain, re-weight and re-limit backends
        (C{max_connections}) and resize the queue.
        """
        old = self._config
        fixed = [
            f.name
            for f in attrs.fields(Config)
            if f.name not in _RELOADABLE_KEYS
            and getattr(old, f.name) != getattr(new, f.name)
        ]
        if fixed:
            self.log.warn(
                "reload: {keys} changed, which takes a restart; they keep"
                " their running values",
                keys=", ".join(_key_name(k) for k in fixed),
            )
        registry = self._registry
        if (old.queue_size, old.queue_timeout) != (new.queue_size, new.queue_timeout):
            registry.configure_queue(new.queue_size, new.queue_timeout)
        before = {b.name: b for b in old.backends}
        after = {b.name: b for b in new.backends}
        for name in before.keys() - after.keys():
            self._drain(registry.get(name))
        for config in new.backends:
            previous = before.get(config.name)
            if previous is None:
                self._add(config)
            else:
                self._update(previous, config)
        self._config = attrs.evolve(
            old,
            backends=new.backends,
            queue_size=new.queue_size,
            queue_timeout=new.queue_timeout,
        )
        self.log.info(
            "reload: {count} backends configured ({added} added, {removed} removed)",
            count=len(new.backends),
            added=len(after.keys() - before.keys()),
            removed=len(before.keys() - after.keys()),
        )

    def _add(self, config: BackendConfig) -> None:
        registry = self._registry
        try:
            backend = registry.get(config.name)
        except KeyError:
            pass
        else:
            # Removed by an earlier reload and still draining: keep it.
            if backend in self._removing and backend.address == config.address:
                del self._removing[backend]
                registry.set_draining(backend, False, "back in lb.ini (reload)")
                if backend.configured_weight != config.weight:
                    registry.set_weight(backend, config.weight, "reload")
                registry.set_max_connections(backend, config.max_connections, "reload")
            else:
                self.log.warn(
                    "reload: backend {backend} is still draining at its old"
                    " address; reload again once it is gone",
                    backend=config.name,
                )
            return
        # Everything keyed by backend first, then the registry, which puts it
        # in rotation (all in this one reactor turn).
        backend = registry.add(config)
        if self.http is not None:
            running = self._config
            self.http.pools[backend] = BackendPool(
                self._reactor,
                config.address,
                running.connect_timeout,
                running.idle_pool_size,
            )
        if self.tcp is not None:
            self.tcp.proxy_protocol[backend] = config.proxy_protocol
        self._health.track(backend, config.health)
        self._app.track(backend)

    def _update(self, old: BackendConfig, new: BackendConfig) -> None:
        backend = self._registry.get(new.name)
        if old.weight != new.weight:
            self._registry.set_weight(backend, new.weight, "reload")
        if old.max_connections != new.max_connections:
            self._registry.set_max_connections(backend, new.max_connections, "reload")
        changed = [
            k
            for k in ("address", "health", "proxy_protocol")
            if getattr(old, k) != getattr(new, k)
        ]
        if changed:
            self.log.warn(
                "reload: [backend:{backend}] {keys} changed, which takes a"
                " restart (or a new backend name)",
                backend=new.name,
                keys=", ".join(changed),
            )

    def _drain(self, backend: Backend) -> None:
        self._registry.set_draining(
            backend, True, "removed from lb.ini (reload): draining"
        )
        self._removing[backend] = None
        self._forget_drained()

    def _forget_drained(self) -> None:
        """Drop the removed backends whose last request has ended."""
        self._sweep = None
        for backend in list(self._removing):
            if backend.active == 0:
                del self._removing[backend]
                self._registry.remove(backend)
                if self.http is not None:
                    pool = self.http.pools.pop(backend, None)
                    if pool is not None:
                        pool.close()
                if self.tcp is not None:
                    self.tcp.proxy_protocol.pop(backend, None)
                self._health.forget(backend)
                self._app.forget(backend)
        if self._removing:
            self._sweep = self._reactor.callLater(TICK, self._forget_drained)


def _key_name(field: str) -> str:
    return f"[{field}]" if field in ("health", "outlier") else f"[txlb] {field}"


class ReloadOnSignal(Service):
    """
    Reloads the configuration file on SIGHUP, in the reactor thread.

    The handler is installed once the reactor runs (after twistd's own) and
    the previous one is put back at stop.
    """

    log = Logger()

    def __init__(
        self,
        reloader: Reloader,
        path: str,
        reactor: Any,
        signum: int = signal.SIGHUP,
    ) -> None:
        self.reloader = reloader
        self._path = path
        self._reactor = reactor
        self._signum = signum
        self._previous: Any = None
        self._installed = False

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        if not self.running:
            return
        self._previous = signal.signal(self._signum, self._received)
        self._installed = True

    def _received(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of whatever the main
        # thread was doing: hand the work to the reactor.
        self._reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """Re-read the file and apply it (what SIGHUP does)."""
        self.log.info("reloading {path}", path=self._path)
        self.reloader.reload(self._path)

    def stopService(self) -> None:
        super().stopService()
        if self._installed:
            signal.signal(self._signum, self._previous)
            self._installed = False
