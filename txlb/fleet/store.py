"""
The seam between the fleet and where its nodes meet (Redis in production,
L{txlb.fleet.redisstore}; an in-memory double in the tests): a store of
one entry per node, each expiring on its own.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

__all__ = ["Answer", "Entry", "IFleetStore", "StoreError"]


class StoreError(Exception):
    """The store could not be reached or answered wrongly (in words)."""


@attrs.frozen
class Entry:
    """
    One node's entry as the store holds it.

    @ivar ttl: seconds it has left before it expires.
    """

    node: str
    body: bytes
    ttl: float


@attrs.frozen
class Answer:
    """
    What an exchange found.

    @ivar entries: every other node's entry.
    @ivar before: this node's entry as it was just before the write (another
        process writing under the same name shows there), or L{None}.
    """

    entries: tuple[Entry, ...]
    before: bytes | None = None


class IFleetStore(Interface):
    """Where the nodes of a fleet publish their entries and read each other's."""

    where = Attribute("What the store is, in words (a URL without password).")

    def exchange(node: str, body: bytes, ttl: float) -> Deferred[Answer]:
        """
        Write C{body} as C{node}'s entry, expiring C{ttl} seconds from now,
        and read every other node's live entry, in one step.

        @return: fires with an L{Answer}, or fails with L{StoreError} (and
            the store tries to reconnect on a later call).
        """

    def leave(node: str) -> Deferred[None]:
        """Remove C{node}'s entry at once (a clean stop); never fails."""

    def close() -> None:
        """Drop the connection, if any."""
