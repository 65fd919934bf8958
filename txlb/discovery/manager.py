"""
Every discovery section of the configuration, each a L{DiscoveryService}:
started with txlb, and on a reload (SIGHUP) kept, started, stopped or
restarted section by section without dropping the set a section found.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from txlb.config import DiscoveryConfig
from txlb.core.registry import Registry
from txlb.discovery.service import DiscoveryService
from txlb.discovery.source import IDiscoverySource

__all__ = ["Discoveries", "SourceMaker"]

SourceMaker = Callable[[DiscoveryConfig], IDiscoverySource]
"""Makes the source a section asks (DNS, EC2, or a test double)."""


class Discoveries(MultiService):
    """The discovery services, one per section, in configuration order."""

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        clock: IReactorTime,
        make_source: SourceMaker,
        configs: Iterable[DiscoveryConfig] = (),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__()
        self._registry = registry
        self._clock = clock
        self._make_source = make_source
        self._jitter = jitter
        self.sections: list[DiscoveryService] = []
        for config in configs:
            self.sections.append(self._make(config))
            self.sections[-1].setServiceParent(self)

    def _make(self, config: DiscoveryConfig) -> DiscoveryService:
        return DiscoveryService(
            config, self._make_source(config), self._registry, self._clock, self._jitter
        )

    def configure(self, configs: Iterable[DiscoveryConfig]) -> list[str]:
        """
        Make the sections exactly C{configs} (a reload): an unchanged one
        goes on as it is; a changed one is asked again at once, keeping the
        set it found until the answer comes; a removed one drains its
        backends.

        @return: what changed, in words (for the reload's log).
        """
        old = {service.name: service for service in self.sections}
        changes = []
        sections = []
        for config in configs:
            service = old.pop(config.name, None)
            if service is not None and service.config == config:
                sections.append(service)
                continue
            new = self._make(config)
            if service is None:
                changes.append(f"[discovery:{config.name}] added")
            else:
                service.disownServiceParent()
                if service.key == new.key:
                    new.inherit(service)
                else:
                    self._drop(service)
                changes.append(f"[discovery:{config.name}] changed")
            new.setServiceParent(self)
            sections.append(new)
        for service in old.values():
            service.disownServiceParent()
            self._drop(service)
            changes.append(f"[discovery:{service.name}] removed")
        self.sections = sections
        return changes

    def _drop(self, service: DiscoveryService) -> None:
        self._registry.apply(
            service.key, [], f"reload: [discovery:{service.name}] removed"
        )

    def status(self) -> list[dict[str, Any]]:
        """Each section's status, for C{/api/server-stats} (C{discovery})."""
        return [service.status() for service in self.sections]
