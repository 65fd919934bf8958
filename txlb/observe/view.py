"""
The registry as plain data: what C{/api/server-stats} shows of each backend
and in total (the stats add rates and latencies to it).
"""

from __future__ import annotations

from typing import Any

from txlb.core.backend import Backend
from txlb.core.registry import Registry

__all__ = ["describe", "snapshot", "totals"]


def describe(b: Backend) -> dict[str, Any]:
    """
    One backend's configuration, state and counters (its requests in flight
    are this balancer's: every worker process's, C{siblings} included).
    """
    return {
        "name": b.name,
        "address": str(b.address),
        "source": b.source,
        "priority": b.spec.priority,
        "healthy": b.healthy,
        "state": b.state,
        "draining": b.draining,
        "active_connections": b.active + b.siblings,
        "total_requests": b.total_requests,
        "failures": b.failures,
        "weight": b.weight,
        "configured_weight": b.configured_weight,
        "ejections": b.ejections,
        "consecutive_failures": b.consecutive_failures,
        "max_connections": b.max_connections,
        "history": [
            {"time": t.time, "healthy": t.healthy, "state": t.state, "reason": t.reason}
            for t in b.history
        ],
    }


def totals(registry: Registry) -> dict[str, Any]:
    """Counts over all backends, and the queue's."""
    backends = registry.backends
    queue = registry.queue
    return {
        "backends": len(backends),
        "healthy": sum(1 for b in backends if b.healthy),
        "available": registry.available,
        "active_connections": sum(b.active + b.siblings for b in backends),
        "total_requests": sum(b.total_requests for b in backends),
        "failures": sum(b.failures for b in backends),
        "panic": registry.panic,
        "queued": len(queue),
        "queue_size": queue.size,
        "queued_total": queue.total,
        "queue_timeouts": queue.timeouts,
        "queue_full_rejections": queue.full_rejections,
    }


def snapshot(registry: Registry, now: float) -> dict[str, Any]:
    """The registry alone as plain data."""
    return {
        "time": now,
        "algorithm": registry.algorithm,
        "backends": [describe(b) for b in registry.backends],
        "totals": totals(registry),
    }
