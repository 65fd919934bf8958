"""
Active probes: how the health checker asks one backend whether it is well.

A probe returns a Deferred that fires with a L{Verdict} and never fails;
the checker applies the timeout.  L{judge} is the pure classifier of an HTTP
probe's answer.
"""

from __future__ import annotations

from typing import Any

import attrs
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import Interface, implementer

from txlb.config import Address, HealthConfig
from txlb.health.reasons import failure_reason

__all__ = ["HTTPProbe", "IProbe", "TCPProbe", "Verdict", "judge"]

_MAX_BODY = 64 * 1024


@attrs.frozen
class Verdict:
    """One probe's result: good or not, and why in words."""

    ok: bool
    reason: str


class IProbe(Interface):
    """Checks one backend once."""

    def check(address: Address, health: HealthConfig) -> Deferred[Verdict]:
        """
        Probe the backend at C{address}.  Fires with a verdict; never fails.
        Cancelling it (the checker's timeout) fires it with a failure the
        checker reports as a timeout.
        """


def judge(status: int, body: bytes, health: HealthConfig) -> Verdict:
    """
    Classify an HTTP probe's answer against the expected statuses and body.
    Pure.
    """
    if not any(low <= status <= high for low, high in health.expect_status):
        return Verdict(False, f"probe answered {status}")
    if health.expect_body and health.expect_body.encode() not in body:
        return Verdict(False, f"probe answer lacks {health.expect_body!r}")
    return Verdict(True, f"probe answered {status}")


def describe(failure: Failure, timeout: float) -> Verdict:
    """A verdict for a probe that got no answer."""
    if failure.check(TimeoutError):
        return Verdict(False, f"probe timed out after {timeout:g}s")
    return Verdict(False, f"probe failed: {failure_reason(failure)}")


@implementer(IProbe)
class HTTPProbe:
    """GETs the health path through an injected treq client."""

    def __init__(self, client: HTTPClient) -> None:
        self._client = client

    def check(self, address: Address, health: HealthConfig) -> Deferred[Verdict]:
        url = f"http://{address}{health.path}"
        d: Deferred[Any] = self._client.get(
            url, headers=Headers({b"User-Agent": [b"txlb-health-check"]})
        )

        def read(response: Any) -> Deferred[Verdict]:
            body: Deferred[bytes] = response.content()
            return body.addCallback(
                lambda data: judge(response.code, data[:_MAX_BODY], health)
            )

        return d.addCallback(read)


class _Close(Protocol):
    def connectionMade(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


@implementer(IProbe)
class TCPProbe:
    """Opens a TCP connection and closes it: the check when no path is set."""

    def __init__(self, reactor: IReactorTCP) -> None:
        self._reactor = reactor

    def check(self, address: Address, health: HealthConfig) -> Deferred[Verdict]:
        kind = TCP6ClientEndpoint if ":" in address.host else TCP4ClientEndpoint
        endpoint = kind(self._reactor, address.host, address.port)
        d: Deferred[Any] = endpoint.connect(Factory.forProtocol(_Close))
        return d.addCallback(lambda _: Verdict(True, "connection accepted"))
