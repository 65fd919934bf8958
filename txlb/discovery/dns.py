"""
C{type = dns}: backends from DNS, through Twisted's own resolver
(C{twisted.names}), as Consul DNS, AWS Cloud Map and Kubernetes headless
services publish them.

  - A name: its A and AAAA records, each an address on the section's port.
  - A name starting with C{_} (C{_web._tcp.service.consul}): its SRV
    records (RFC 2782), each target's addresses (from the answer's
    additional section, else asked) on the record's port, with the
    record's priority and weight.  Weights are shared within each
    priority; a weight of 0 gets a very small share; a target's weight is
    split between its addresses.  A target of C{.} means "no service".

NXDOMAIN (and a name with no such records) is an authoritative empty
answer; any other failure (SERVFAIL, REFUSED, a timeout) is a failed
lookup.  The answer's TTL is the smallest of its records'.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IResolver
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure
from zope.interface import implementer

from txlb.discovery.config import DNSConfig
from txlb.discovery.source import Answer, Found, IDiscoverySource, LookupFailed
from txlb.schema import Address

__all__ = ["QUERY_TIMEOUT", "DNSSource", "srv_weights"]

QUERY_TIMEOUT = (1, 3)
"""Each query's attempts: 1 s, then 3 s (twisted.names retries in turn)."""

_Records = list[dns.RRHeader]
_Result = tuple[_Records, _Records]
# The smallest weight a backend can have (a weight of 0 in SRV).
_TINY = 0.001


@implementer(IDiscoverySource)
class DNSSource:
    """Asks C{resolver} for a section's records."""

    kind = "dns"

    def __init__(self, config: DNSConfig, port: int, resolver: IResolver) -> None:
        """
        @param port: the backends' port (A/AAAA names; SRV records carry theirs).
        @param resolver: C{twisted.names.client.Resolver} for the section's
            resolvers (or the system's), or a test double.
        """
        self._config = config
        self._port = port
        self._resolver = resolver
        where = ", ".join(map(str, config.resolvers)) or "the system's resolvers"
        self.query = f"{'SRV' if config.srv else 'A/AAAA'} {config.name} via {where}"

    def lookup(self) -> Deferred[Answer]:
        name = self._config.name
        if self._config.srv:
            d = self._records(self._resolver.lookupService, name)
            return d.addCallback(self._services, name)
        return self._addresses(name).addCallback(self._plain, name)

    # --- A/AAAA -------------------------------------------------------------------

    def _plain(self, found: tuple[list[tuple[str, int]], bool], name: str) -> Answer:
        addresses, exists = found
        if not addresses:
            return Answer((), f"{name}: {'no address' if exists else 'NXDOMAIN'}")
        ttl = min(ttl for _, ttl in addresses)
        hosts = sorted({host for host, _ in addresses}, key=_order)
        return Answer(
            tuple(Found(Address(host, self._port)) for host in hosts),
            f"{name}: {_count(len(hosts), 'address', 'addresses')}, ttl {ttl}s",
            float(ttl),
        )

    def _addresses(self, name: str) -> Deferred[tuple[list[tuple[str, int]], bool]]:
        """A and AAAA of C{name}: (address, ttl) pairs, and whether it exists."""
        resolver = self._resolver
        both = gatherResults(
            [
                self._records(resolver.lookupAddress, name),
                self._records(resolver.lookupIPV6Address, name),
            ],
            consumeErrors=True,
        )
        both.addErrback(_first_error)
        return both.addCallback(
            lambda results: (
                [a for result in results if result for a in _hosts(result[0])],
                any(result is not None for result in results),
            )
        )

    def _records(self, lookup: Any, name: str) -> Deferred[_Result | None]:
        """
        A lookup's answer and additional records, L{None} for NXDOMAIN;
        fails (L{LookupFailed}) otherwise.
        """
        d: Deferred[Any] = lookup(name, timeout=QUERY_TIMEOUT)
        d.addCallbacks(
            lambda r: (list(r[0]), list(r[2])), _classify, errbackArgs=(name,)
        )
        return d

    # --- SRV ----------------------------------------------------------------------

    def _services(self, result: _Result | None, name: str) -> Deferred[Answer]:
        if result is None:
            return _done(Answer((), f"{name}: NXDOMAIN"))
        answers, extra = result
        services = [r for r in answers if r.type == dns.SRV]
        usable = [r for r in services if str(_srv(r).target) not in ("", ".")]
        if not usable:
            return _done(Answer((), f"{name}: no service"))
        known: dict[str, list[tuple[str, int]]] = {}
        for host, ttl, owner in _hosts_with_owner(extra):
            known.setdefault(owner, []).append((host, ttl))
        targets = sorted({str(_srv(r).target).lower() for r in usable})
        asks: list[Deferred[Any]] = []
        for target in targets:
            if target in known:
                asks.append(_done((known[target], True)))
            else:
                asks.append(self._addresses(target))
        d = gatherResults(asks, consumeErrors=True)
        d.addErrback(_first_error)
        return d.addCallback(self._combine, name, usable, targets)

    def _combine(
        self,
        results: list[tuple[list[tuple[str, int]], bool]],
        name: str,
        services: _Records,
        targets: list[str],
    ) -> Answer:
        by_target = dict(
            zip(targets, (addresses for addresses, _ in results), strict=True)
        )
        ttls = [r.ttl for r in services]
        entries: list[tuple[int, float, list[str], int]] = []
        for record in services:
            srv = _srv(record)
            addresses = by_target.get(str(srv.target).lower(), [])
            ttls += [ttl for _, ttl in addresses]
            hosts = sorted({host for host, _ in addresses}, key=_order)
            if hosts:
                entries.append((srv.priority, float(srv.weight), hosts, srv.port))
        weights = srv_weights([(p, w) for p, w, _, _ in entries])
        found: dict[Address, Found] = {}
        for (priority, _, hosts, port), weight in zip(entries, weights, strict=True):
            for host in hosts:
                address = Address(host, port)
                share = max(_TINY, round(weight / len(hosts), 3))
                if address not in found or priority < found[address].priority:
                    found[address] = Found(address, share, priority)
        ttl = min(ttls)
        return Answer(
            tuple(found.values()),
            f"{name}: {_count(len(services), 'SRV record', 'SRV records')},"
            f" {_count(len(found), 'address', 'addresses')}, ttl {ttl}s",
            float(ttl),
        )


def srv_weights(records: Sequence[tuple[int, float]]) -> list[float]:
    """
    Backend weights (above 0, at most 1000) for SRV (priority, weight)
    pairs, in order: within each priority the shares of RFC 2782; a weight
    of 0 gets a hundredth of the smallest other one (all 0: equal shares).
    """
    out = [0.0] * len(records)
    for priority in {p for p, _ in records}:
        members = [i for i, (p, _) in enumerate(records) if p == priority]
        positive = [records[i][1] for i in members if records[i][1] > 0]
        tiny = min(positive) / 100 if positive else 1.0
        values = {i: records[i][1] if records[i][1] > 0 else tiny for i in members}
        scale = min(1.0, 1000.0 / max(values.values()))
        for i, value in values.items():
            out[i] = max(_TINY, value * scale)
    return out


def _classify(failure: Failure, name: str) -> Failure | None:
    if failure.check(DNSNameError):
        return None  # NXDOMAIN: authoritatively nothing
    return Failure(LookupFailed(f"{name}: {_words(failure)}"))


def _words(failure: Failure) -> str:
    from twisted.names import error

    for kind, words in (
        (error.DNSServerError, "SERVFAIL"),
        (error.DNSQueryRefusedError, "REFUSED"),
        (error.DNSFormatError, "FORMERR"),
        (error.DNSNotImplementedError, "NOTIMP"),
    ):
        if failure.check(kind):
            return words
    if (
        failure.check(error.DNSQueryTimeoutError)
        or type(failure.value).__name__ == "TimeoutError"
    ):
        return f"no answer in {sum(QUERY_TIMEOUT)}s"
    return f"{type(failure.value).__name__}: {failure.getErrorMessage()}"


def _first_error(failure: Failure) -> Failure:
    """gatherResults' FirstError, unwrapped."""
    inner = getattr(failure.value, "subFailure", None)
    return inner if isinstance(inner, Failure) else failure


def _hosts(records: Iterable[dns.RRHeader]) -> list[tuple[str, int]]:
    return [(host, ttl) for host, ttl, _ in _hosts_with_owner(records)]


def _hosts_with_owner(records: Iterable[Any]) -> list[tuple[str, int, str]]:
    found = []
    for record in records:
        if not isinstance(record, dns.RRHeader):
            continue
        if record.type == dns.A:
            host = _any(record.payload).dottedQuad()
        elif record.type == dns.AAAA:
            host = socket.inet_ntop(socket.AF_INET6, _any(record.payload).address)
        else:
            continue
        found.append((host, record.ttl, str(record.name).lower()))
    return found


def _order(host: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return (family == socket.AF_INET6, socket.inet_pton(family, host))


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _srv(record: dns.RRHeader) -> dns.Record_SRV:
    payload = record.payload
    assert isinstance(payload, dns.Record_SRV)
    return payload


def _any(payload: object) -> Any:
    return payload


def _done(value: Any) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.callback(value)
    return d
