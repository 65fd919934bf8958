"""
What L{txlb.core.registry.Registry.apply} passes over: a source's backend
whose name or address another backend holds.  Each conflict is warned of
once while it lasts, however often the source answers (a DNS name is
re-resolved every second), and again if it comes back after it ended.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger

from txlb.config import BackendConfig
from txlb.core.backend import Backend

__all__ = ["Conflicts"]


class Conflicts:
    """The conflicts each source has now, and the warnings they took."""

    log = Logger()

    def __init__(self) -> None:
        self._current: dict[str, set[tuple[str, str]]] = {}

    def report(
        self, source: str, found: Iterable[tuple[BackendConfig, Backend]], cause: str
    ) -> None:
        """
        C{source}'s answer had these conflicts (each a spec and the backend
        that holds its name or address): warn of the new ones, forget the
        ones that ended.
        """
        told = self._current.get(source, set())
        now: set[tuple[str, str]] = set()
        for spec, holder in found:
            conflict = (spec.name, str(spec.address))
            now.add(conflict)
            if conflict not in told:
                self._warn(source, spec, holder, cause)
        if now:
            self._current[source] = now
        else:
            self._current.pop(source, None)

    def _warn(
        self, source: str, spec: BackendConfig, holder: Backend, cause: str
    ) -> None:
        if holder.source == source and holder.name == spec.name:
            self.log.warn(
                "{cause}: backend {backend} moved from {old} to {new}, which"
                " takes a restart (or a new backend name); it stays at {old}",
                cause=cause,
                backend=spec.name,
                old=str(holder.address),
                new=str(spec.address),
            )
        elif holder.leaving and holder.address == spec.address:
            self.log.warn(
                "{cause}: backend {backend} is still draining at its old"
                " place; it is added once it is gone",
                cause=cause,
                backend=spec.name,
            )
        else:
            self.log.warn(
                "{cause}: backend {backend} ({address}) not added: {name} at"
                " {taken} comes from {source}",
                cause=cause,
                backend=spec.name,
                address=str(spec.address),
                name=holder.name,
                taken=str(holder.address),
                source=holder.source,
            )
