"""
The twistd plugin's options and service: the one place that resolves the
global reactor and wires the single registry into every part.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Collection
from typing import Any, ClassVar, Protocol

import prometheus_client
from treq.client import HTTPClient
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.server import Site

from txlb import __version__
from txlb.config import Config, ConfigError, load
from txlb.core.registry import Registry
from txlb.discovery.manager import Discoveries
from txlb.discovery.metrics import DiscoveryCollector
from txlb.discovery.sources import RealSources, check, checked_load
from txlb.fleet.metrics import FleetCollector
from txlb.fleet.redisstore import RedisStore
from txlb.fleet.settings import node_name
from txlb.fleet.sharing import Fleet
from txlb.health.checker import HealthChecker
from txlb.health.probes import HTTPProbe, TCPProbe
from txlb.http.proxy import HTTPProxy
from txlb.http.routing import front_end
from txlb.lifecycle.gctune import tune_gc
from txlb.lifecycle.reload import Reloader
from txlb.lifecycle.shutdown import Drainable, Lifecycle
from txlb.lifecycle.signals import ReloadOnSignal
from txlb.net import fastio
from txlb.net.admission import ClientLimit
from txlb.observe import features
from txlb.observe.accesslog import AccessLog
from txlb.observe.admin import AdminTokenError, read_admin_token
from txlb.observe.assets import WebAssets
from txlb.observe.stats import Sampler
from txlb.observe.webapp import StatsApp
from txlb.observe.webfiles import HOW_TO_FIX
from txlb.tcp.proxy import TCPProxy, TCPProxyFactory
from txlb.workers.setup import supervise
from txlb.workers.supervisor import WorkerPool

__all__ = ["Options", "check_config", "makeService"]

_log = Logger(namespace="txlb.tap")


class Options(usage.Options):
    synopsis = "--config lb.ini [--check]"
    longdesc = (
        "Run the txlb load balancer. Everything about balancing is set in the "
        "INI file given by --config (sections [txlb], [health], one "
        "[backend:NAME] per backend and [discovery:NAME] for backends found in "
        "DNS or EC2; README.md lists every key). A wrong file "
        "stops start-up with one line naming the file, section, key and what "
        "is allowed, before any port is bound."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        ["config", "c", "lb.ini", "Path of the INI configuration file."],
    ]
    optFlags: ClassVar[list[list[Any]]] = [
        ["check", None, "Check the configuration file, print the result and exit."],
    ]

    config: Config

    def opt_version(self) -> None:
        """Print txlb's version and exit."""
        print(f"txlb {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        try:
            self.config = check_config(self["config"])
        except ConfigError as e:
            sys.stderr.write(f"txlb: {e}\n")
            sys.exit(1)
        if self["check"]:
            print(f"txlb: {self['config']}: configuration is valid")
            sys.exit(0)


def check_config(path: str) -> Config:
    """
    Read and check the configuration file, its endpoint strings included
    (what C{--check} and C{txlb check} report), before anything is bound.

    @raise ConfigError: one line naming the file, section, key and what is
        allowed.
    """
    config = load(path)
    # What the discovery sections need of the machine (boto3, a region).
    check(config)
    from twisted.internet import reactor

    _endpoints(reactor, config)
    _fleet_node(config)
    return config


def _fleet_node(config: Config) -> str:
    """This node's name in the fleet (C{[fleet] node}, else the host name)."""
    try:
        return node_name(config.fleet)
    except ValueError as e:
        raise ConfigError(config.filename, str(e), "fleet", "node") from None


def _endpoints(reactor: Any, config: Config) -> tuple[list[Any], Any]:
    def parse(key: str, description: str) -> Any:
        try:
            return serverFromString(reactor, description)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            if description.startswith("systemd:") and isinstance(
                e, (IndexError, KeyError)
            ):
                # Twisted looks the inherited socket up while parsing.
                why = (
                    f"systemd passed no such socket ({e!r}); start txlb through"
                    " its .socket unit (systemd/txlb.socket), or use tcp:"
                )
            else:
                why = (
                    f"is not a Twisted endpoint ({e or type(e).__name__});"
                    " expected e.g. tcp:8080 or tcp:8080:interface=127.0.0.1"
                )
            raise ConfigError(
                config.filename, f"{description!r} {why}", "txlb", key
            ) from None

    listen = [parse("listen", d) for d in config.listen]
    stats = parse("stats_listen", config.stats_listen) if config.stats_listen else None
    return listen, stats


class ClientSide(Protocol):
    """What each mode's client side shows the drain and the stats."""

    @property
    def connections(self) -> Collection[Drainable]: ...

    @property
    def limit(self) -> ClientLimit: ...

    @property
    def rejected(self) -> int: ...


class _ProxyCloser(Service):
    """Closes the backend pools when the service stops."""

    def __init__(self, proxy: HTTPProxy) -> None:
        self._proxy = proxy

    def stopService(self) -> None:
        super().stopService()
        self._proxy.close()


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    Build the balancer's services from checked options.

    @param reactor: defaults to the global reactor (tests pass a fake one).
    """
    if reactor is None:
        from twisted.internet import reactor
    # Events go straight to their handlers (see txlb.fastio for the cost).
    fastio.install(reactor)
    config = options.config
    reactor.callWhenRunning(tune_gc)
    # Stops the listeners first and drains the connections (SIGTERM).
    top = Lifecycle(reactor, config.shutdown_timeout, config.shutdown_grace)
    # p2c's draws: seeded from the system (each process its own).
    registry = Registry.from_config(config, reactor, random.Random().random)
    access_log = _access_log(config, reactor)
    app = _stats_app(config, registry, reactor)
    app.draining = lambda: top.draining
    Sampler(app.stats, reactor).setServiceParent(top)
    # Backends found in DNS or EC2, each section on its own timer (in the
    # supervisor when there are workers: its registry tells theirs).
    sources = RealSources(reactor)
    discoveries = Discoveries(registry, reactor, sources, config.discoveries)
    app.stats.discovery = discoveries.status
    app.metrics.prometheus.register(DiscoveryCollector(registry, discoveries))
    reloader = Reloader(config, registry, discoveries=discoveries, load=checked_load)
    pool = None
    if config.workers > 1:
        if access_log is not None:
            access_log.close()  # checked; every worker writes its own lines
        pool = supervise(
            reactor, config, options["config"], registry, app, reloader, top
        )
    else:
        if access_log is not None:
            access_log.setServiceParent(top)
        _serve(reactor, config, registry, app, access_log, top)
    HealthChecker.from_config(
        config,
        registry,
        HTTPProbe(HTTPClient(Agent(reactor, pool=_probe_pool(reactor)))),
        TCPProbe(reactor),
        reactor,
    ).setServiceParent(top)
    sources.setServiceParent(top)
    discoveries.setServiceParent(top)
    _fleet(config, registry, app, reactor, top, pool)
    # SIGHUP re-reads the same file.
    ReloadOnSignal(reloader, options["config"], reactor).setServiceParent(top)
    return top


def _fleet(
    config: Config,
    registry: Registry,
    app: StatsApp,
    reactor: Any,
    top: Lifecycle,
    pool: WorkerPool | None,
) -> None:
    """
    With C{[fleet]}: share load and ejections through its Redis (with
    workers, from the supervisor: it publishes their counts and tells them
    the peers').
    """
    settings = config.fleet
    if settings.redis is None:
        return
    fleet = Fleet(
        registry,
        RedisStore(reactor, settings.redis, max(settings.ttl, 0.25)),
        _fleet_node(config),
        settings.interval,
        settings.ttl,
        reactor,
    )
    if pool is not None:
        fleet.before_report = pool.fanout.refresh
        fleet.peers_changed = pool.fanout.peers_changed
    fleet.setServiceParent(top)
    app.stats.fleet = fleet.snapshot
    app.metrics.prometheus.register(FleetCollector(fleet))


def _access_log(config: Config, reactor: Any) -> AccessLog | None:
    """The access log, opened now so that a bad path stops start-up."""
    observe = config.observe
    if not observe.access_log:
        return None
    try:
        return AccessLog.open(
            observe.access_log, observe.access_log_format, reactor, reactor
        )
    except OSError as e:
        sys.stderr.write(
            f"txlb: {config.filename}: [txlb] access_log: cannot open"
            f" {observe.access_log!r}: {e.strerror}\n"
        )
        sys.exit(1)


def _serve(
    reactor: Any,
    config: Config,
    registry: Registry,
    app: StatsApp,
    access_log: AccessLog | None,
    top: Lifecycle,
) -> None:
    """One process serves the clients (C{workers = 1}): the proxy and its ports."""
    stats = app.resource()
    listen, stats_endpoint = _endpoints(reactor, config)
    front: Factory
    clients: ClientSide
    if config.mode == "tcp":
        # Raw TCP on every listen endpoint; the stats app is only on
        # stats_listen, which the config requires in this mode.
        tcp = TCPProxy.from_config(config, registry, reactor, reactor, app.observe)
        features.show(app, registry, None, None)
        front = TCPProxyFactory(tcp)
        clients = tcp
    else:
        proxy = HTTPProxy.from_config(
            config, registry, reactor, reactor, access_log, app.observe
        )
        features.show(app, registry, proxy.sticky, proxy.limiter)
        _ProxyCloser(proxy).setServiceParent(top)
        http = front_end(
            proxy, stats, config.client, reactor, reserve=stats_endpoint is None
        )
        front = clients = http
    top.watch(clients.connections)
    app.stats.clients = lambda: {
        "connections": len(clients.connections),
        "refused": clients.limit.refused,
        "rejected": clients.rejected,
    }
    for endpoint in listen:
        _listen(endpoint, front).setServiceParent(top)
    if stats_endpoint is not None:
        stats_port = _listen(stats_endpoint, Site(stats, reactor=reactor))
        stats_port.setServiceParent(top)
        # Open through the drain: /healthz says 503 there while it lasts.
        top.listen_until_drained(stats_port)


def _stats_app(config: Config, registry: Registry, reactor: Any) -> StatsApp:
    """The stats app, with its files and admin token read now, at start-up."""
    # Per-label "_created" series would double /metrics for no use here.
    prometheus_client.disable_created_metrics()
    admin_token = None
    token_file = config.observe.admin_token_file
    if token_file:
        try:
            admin_token = read_admin_token(token_file)
        except AdminTokenError as e:
            sys.stderr.write(f"txlb: {config.filename}: [txlb] admin_token_file: {e}\n")
            sys.exit(1)
    assets = WebAssets.find()
    if assets.missing:
        _log.warn(
            "the dashboard is unavailable: {missing} missing from {root}; {fix}",
            missing=", ".join(assets.missing),
            root=assets.root,
            fix=HOW_TO_FIX,
        )
    return StatsApp(
        registry,
        reactor,
        assets=assets,
        admin_token=admin_token,
        events_rate=config.observe.events_rate,
        config=config,
    )


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


def _probe_pool(reactor: Any) -> HTTPConnectionPool:
    """
    One kept-alive connection per backend for its probes (as Envoy's health
    checks reuse theirs).  A fresh connection per probe cost a 1000-backend
    pool probed every 2 s about a fifth of its CPU time (connect, accept and
    close on both sides, 500 a second); reused, about 3%.  A backend that
    closes or restarts is probed on a new connection (a GET that meets a
    closed cached connection is retried once on a fresh one), a hung one
    times out the same; what a reused connection cannot see (a backend that
    accepts no new connection but serves an old one) the passive checks do:
    real requests that cannot connect count as failures and eject it.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 1
    # Idle between probes for an interval; the backend may close it sooner.
    pool.cachedConnectionTimeout = 3600
    pool._factory = _QuietClientFactory
    return pool


def _listen(endpoint: Any, factory: Any) -> StreamServerEndpointService:
    service = StreamServerEndpointService(endpoint, factory)
    # A port that cannot be bound stops start-up instead of being logged.
    service._raiseSynchronously = True
    return service
