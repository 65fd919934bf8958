"""
What the registry tells the rest of txlb: a backend was added, changed or
removed, and each change of a backend's state.

Every part that keeps something per backend (the HTTP pools, the health
checker, the stats, the metrics) subscribes with L{Registry.subscribe} and
attaches its own object to the backend when told it was added, so no part
keeps a list of backends of its own, and a reload, a discovery answer and an
admin call all take one road: the registry.
"""

from __future__ import annotations

from zope.interface import Interface, implementer

from txlb.config import BackendConfig
from txlb.core.backend import Backend, Transition

__all__ = ["BackendListener", "IBackendListener"]


class IBackendListener(Interface):
    """Hears of the registry's membership changes, in order, synchronously."""

    def backend_added(backend: Backend) -> None:
        """
        C{backend} joined the registry; it enters rotation once every
        listener has heard (so its pool, probe and series exist first).
        Subscribing hears this for every backend already there.
        """

    def backend_changed(backend: Backend, old: BackendConfig) -> None:
        """C{backend.spec} replaced C{old} (its counts and state stay)."""

    def backend_removed(backend: Backend) -> None:
        """
        C{backend} left the registry for good (drained, or its drain timed
        out); drop what was kept for it.
        """

    def backend_state(backend: Backend, transition: Transition) -> None:
        """
        C{backend}'s state changed (health, ejection, drain, weight, slow
        start...), for the reason C{transition} records.
        """


@implementer(IBackendListener)
class BackendListener:
    """A listener that does nothing: subclasses override what they need."""

    def backend_added(self, backend: Backend) -> None:
        pass

    def backend_changed(self, backend: Backend, old: BackendConfig) -> None:
        pass

    def backend_removed(self, backend: Backend) -> None:
        pass

    def backend_state(self, backend: Backend, transition: Transition) -> None:
        pass
