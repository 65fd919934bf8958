"""
Reload: parse the configuration again, compare it with the running one, and
tell the registry.

The backends of lb.ini (source C{static}) become exactly the new file's,
through L{txlb.core.registry.Registry.apply}: new ones added, removed ones
drained and then dropped, changed ones updated (weight, C{max_connections},
health settings, PROXY protocol).  The queue's size and timeout apply to
requests that start waiting from then on.  Every other key keeps its running
value, and the reload names each changed one as needing a restart.  A file
that does not parse is rejected and the running configuration stays.
Backends from the admin API are not touched; the discovery sections are
kept, started, restarted or stopped section by section
(L{txlb.discovery.manager.Discoveries.configure}), each keeping the set it
found until its source answers again.  C{drain_timeout} applies to
backends removed from then on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs
from twisted.logger import Logger

from txlb.config import Config, ConfigError, load, txlb_keys
from txlb.core.registry import Registry
from txlb.discovery.manager import Discoveries
from txlb.schema import keys_of

__all__ = ["Reloader", "changed_keys"]

# The keys a reload applies (with the backends); any other needs a restart.
_RELOADABLE = frozenset(
    {"[txlb] queue_size", "[txlb] queue_timeout", "[txlb] drain_timeout"}
)


def _values(config: Config) -> Iterator[tuple[str, Any]]:
    """Every key's name and value, backends aside."""
    for name, (group, _) in txlb_keys().items():
        owner = getattr(config, group) if group else config
        yield f"[txlb] {name}", getattr(owner, name)
    for section in ("health", "outlier", "ratelimit", "fleet"):
        values = getattr(config, section)
        for name in keys_of(type(values)):
            yield f"[{section}] {name}", getattr(values, name)


def changed_keys(old: Config, new: Config) -> list[str]:
    """The keys, backends aside, whose values differ, as ``[section] key``."""
    return [
        name
        for (name, before), (_, after) in zip(_values(old), _values(new), strict=True)
        if before != after
    ]


@attrs.define
class Reloader:
    """Applies a new configuration to the running registry."""

    _config: Config
    _registry: Registry
    _discoveries: Discoveries | None = None
    _load: Callable[[str], Config] = load
    # Told of each configuration applied (the workers' supervisor).
    after: list[Callable[[Config], None]] = attrs.field(factory=list)
    log = Logger()

    @property
    def config(self) -> Config:
        """The configuration in force."""
        return self._config

    def reload(self, path: str, load: Callable[[str], Config] | None = None) -> bool:
        """
        Read the configuration at C{path} again and apply it.

        @return: whether the file was valid (and applied).
        """
        try:
            config = (load or self._load)(path)
        except ConfigError as e:
            self.log.error(
                "reload rejected; the running configuration stays: {error}",
                error=str(e),
            )
            return False
        self.apply(config)
        return True

    def apply(self, new: Config) -> None:
        """Apply C{new}: its backends, and the queue's size and timeout."""
        old = self._config
        changed = changed_keys(old, new)
        fixed = [name for name in changed if name not in _RELOADABLE]
        if fixed:
            self.log.warn(
                "reload: {keys} changed, which takes a restart; they keep"
                " their running values",
                keys=", ".join(fixed),
            )
        registry = self._registry
        balancing = attrs.evolve(
            old.balancing,
            queue_size=new.balancing.queue_size,
            queue_timeout=new.balancing.queue_timeout,
            drain_timeout=new.balancing.drain_timeout,
        )
        if balancing != old.balancing:
            registry.queue.configure(balancing.queue_size, balancing.queue_timeout)
            registry.drain_timeout = balancing.drain_timeout
        before = {b.name for b in old.backends}
        after = {b.name for b in new.backends}
        registry.apply("static", new.backends, "reload")
        sections: list[str] = []
        if self._discoveries is not None:
            sections = self._discoveries.configure(new.discoveries)
        self._config = attrs.evolve(
            old,
            backends=new.backends,
            discoveries=new.discoveries,
            balancing=balancing,
        )
        for hook in self.after:
            hook(self._config)
        self.log.info(
            "reload: {count} backends configured ({added} added, {removed}"
            " removed){sections}",
            count=len(new.backends),
            added=len(after - before),
            removed=len(before - after),
            sections="; " + ", ".join(sections) if sections else "",
        )
