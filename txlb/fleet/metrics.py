"""
The fleet's Prometheus series, read from the L{Fleet} at scrape time (a
collector registered beside the registry's, L{txlb.observe.metrics}).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from txlb.fleet.sharing import SHARING, Fleet

__all__ = ["FleetCollector"]


class FleetCollector(Collector):
    """C{txlb_fleet_*}: whether the node shares, its peers, their load."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def collect(self) -> Iterator[Metric]:
        fleet = self._fleet
        yield GaugeMetricFamily(
            "txlb_fleet_up",
            "1 while the node shares load through the store, 0 while local only.",
            value=1 if fleet.status == SHARING else 0,
        )
        yield GaugeMetricFamily(
            "txlb_fleet_peers", "Other nodes counted now.", value=len(fleet.peers)
        )
        yield CounterMetricFamily(
            "txlb_fleet_exchanges",
            "Publish-and-read round trips that succeeded.",
            value=fleet.exchanges,
        )
        yield CounterMetricFamily(
            "txlb_fleet_exchange_failures",
            "Round trips that failed (store unreachable, no answer in time).",
            value=fleet.failures,
        )
        yield CounterMetricFamily(
            "txlb_fleet_peer_ejections",
            "Backends ejected on a peer's word.",
            value=fleet.peer_ejections,
        )
        load = GaugeMetricFamily(
            "txlb_fleet_node_load",
            "Requests in flight from each node of the fleet (this one included).",
            labels=["node"],
        )
        load.add_metric([fleet.node], _own(fleet))
        for name, peer in fleet.peers.items():
            load.add_metric([name], peer.report.load)
        yield load
        peers = GaugeMetricFamily(
            "txlb_fleet_backend_peer_connections",
            "Requests in flight to the backend from the other nodes.",
            labels=["backend"],
        )
        for b in fleet.registry.backends:
            peers.add_metric([b.name], b.peers)
        yield peers


def _own(fleet: Fleet) -> int:
    return sum(b.active + b.siblings for b in fleet.registry.backends)
