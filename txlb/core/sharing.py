"""
What the registry does when its counts and verdicts are shared with other
processes (L{txlb.workers}): the seams, declared here so that the core stays
pure and a single process pays nothing (the hooks are L{None} then).

  - L{ISharedCounts}: requests in flight counted across processes.  The
    registry tells it of every lease taken or given back, asks it to bring
    the candidates' C{siblings} up to date before a pick, and asks it for a
    permit before a lease on a backend with C{max_connections}, so that the
    limit holds across processes.
  - L{IOutcomes}: where passive results go when one process decides the
    ejections for all: each failure, and the first success after failures.
"""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import Interface

from txlb.core.backend import Backend

__all__ = ["IOutcomes", "ISharedCounts"]


class ISharedCounts(Interface):
    """Requests in flight counted across processes."""

    def refresh(candidates: Sequence[Backend]) -> None:
        """
        Bring each candidate's C{siblings} (and C{others}) up to date, just
        before a pick among them.
        """

    def counted(backend: Backend) -> None:
        """C{backend.active} (or C{total_requests}) changed here: publish it."""

    def admit(backend: Backend) -> bool:
        """
        Take one of C{backend}'s C{max_connections} permits, shared by all
        processes; L{False} when they are all out (the backend is full).
        """

    def give_back(backend: Backend) -> None:
        """Return a permit L{admit} gave."""


class IOutcomes(Interface):
    """Where passive results go when another process decides ejections."""

    def failed(backend: Backend, why: str) -> None:
        """A request failed on C{backend} (refused, reset, timed out, 5xx...)."""

    def recovered(backend: Backend) -> None:
        """The first success on C{backend} after one or more failures."""
