"""
The stats app: a Klein app bound to one registry, serving
C{/api/server-stats} (and, with the dashboard, C{/dashboard}).
"""

from __future__ import annotations

import json

import attrs
from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from txlb.registry import Registry

__all__ = ["StatsApp"]


@attrs.define
class StatsApp:
    """The HTTP API over a registry."""

    registry: Registry
    app = Klein()

    @app.route("/api/server-stats", methods=["GET", "HEAD"])
    def server_stats(self, request: IRequest) -> bytes:
        """The registry's snapshot as JSON."""
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(self.registry.snapshot()).encode("utf-8")

    def resource(self) -> IResource:
        """The twisted.web resource serving this app."""
        return self.app.resource()  # type: ignore[no-any-return]
