"""
Passive outlier detection: when to eject a backend that fails real requests,
and for how long (Envoy's consecutive-5xx detector, HAProxy's
C{observe layer7}).  Pure decisions; the registry applies them.
"""

from __future__ import annotations

from twisted.logger import Logger

from txlb.config import OutlierConfig
from txlb.core.backend import Backend

__all__ = ["Ejector"]


class Ejector:
    """Counts each backend's failures in a row and decides its ejections."""

    log = Logger()

    def __init__(self, config: OutlierConfig) -> None:
        self.config = config

    def failed(
        self, backend: Backend, why: str, ejected: int, total: int, now: float
    ) -> tuple[float, str] | None:
        """
        Count one failure of C{backend}.

        @param ejected: backends ejected now.
        @param total: backends in the registry.
        @return: how long to eject it for and why, or L{None} to keep it.
        """
        backend.failures += 1
        backend.consecutive_failures += 1
        config = self.config
        limit = config.consecutive_failures
        if not limit or backend.consecutive_failures < limit or backend.ejected:
            return None
        cause = f"{backend.consecutive_failures} consecutive failures" + (
            f" (last: {why})" if why else ""
        )
        if not self.room(ejected, total):
            if backend.consecutive_failures == limit:
                self.log.warn(
                    "backend {backend} not ejected ({cause}): max_ejected_percent"
                    " {percent}% reached",
                    backend=backend.name,
                    cause=cause,
                    percent=config.max_ejected_percent,
                )
            return None
        if now - backend.last_unejected > config.max_ejection_time:
            backend.ejections = 0
        backend.ejections += 1
        backend.ejected_total += 1
        backend.consecutive_failures = 0
        duration = min(
            config.base_ejection_time * backend.ejections, config.max_ejection_time
        )
        return duration, f"{cause}; ejected for {duration:g}s"

    def room(self, ejected: int, total: int) -> bool:
        """
        Whether one more backend may be ejected, C{ejected} of C{total}
        being ejected now (C{max_ejected_percent}, and at least one unless 0).
        """
        percent = self.config.max_ejected_percent
        allowed = total * percent // 100
        if percent:
            allowed = max(1, allowed)
        return ejected < allowed
