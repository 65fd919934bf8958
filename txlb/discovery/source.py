"""
What a discovery source is (L{IDiscoverySource}) and what it answers
(L{Answer}): the seam between the service that schedules lookups
(L{txlb.discovery.service}) and DNS or EC2, which tests replace with
in-memory doubles.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from txlb.schema import Address

__all__ = ["Answer", "Found", "IDiscoverySource", "LookupFailed"]


@attrs.frozen
class Found:
    """
    One backend a source found.

    @ivar weight: its own weight (SRV records), or L{None} for the section's.
    @ivar priority: RFC 2782's priority (SRV records), else 0.
    """

    address: Address
    weight: float | None = None
    priority: int = 0


@attrs.frozen
class Answer:
    """
    A source's answer: what it found, which may be nothing (an
    authoritative empty answer: NXDOMAIN, no instances).

    @ivar ttl: seconds the answer is good for (DNS), or L{None}: ask again
        after the section's interval.
    @ivar words: the answer in a few words, for the backends' history
        (e.g. C{web.lb.test: 2 addresses, ttl 5s}).
    """

    found: tuple[Found, ...]
    words: str
    ttl: float | None = None


class LookupFailed(Exception):
    """
    A lookup failed (timeout, SERVFAIL, API error, throttling): nothing is
    known, so the last good set stays.  C{str()} says why, in a few words.
    """


class IDiscoverySource(Interface):
    """Asks DNS or EC2 which backends there are."""

    kind = Attribute("C{dns} or C{ec2}.")
    query = Attribute("What it asks, in words (e.g. C{A/AAAA web.lb.test}).")

    def lookup() -> Deferred[Answer]:
        """
        Ask once.

        @return: fires with an L{Answer}, or fails (L{LookupFailed}, or any
            other error, which counts the same) when nothing is known.
        """
