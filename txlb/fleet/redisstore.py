"""
The fleet's store in Redis, through txredisapi's protocol on a connection
this module makes with the injected reactor (so no global reactor, and the
reactor never waits for Redis).

Each node's entry is a string key ``txlb:{fleet}:node:NAME`` written with
C{PX} (it expires by itself), and the set ``txlb:{fleet}:nodes`` names the
nodes.  One Lua script per exchange writes this node's entry and returns
every live entry with the milliseconds it has left, dropping the names
whose entries expired: one round trip per interval.  The database of the
URL keeps fleets apart (one Redis, several fleets).  Every key shares the
hash tag C{{fleet}}, so a script touches one slot.

A failed exchange (refused, reset, no answer within C{timeout}) drops the
connection; the next attempts wait 0.1 s, then 0.2 s, ... up to 1 s apart,
and fail at once in between, so an unreachable Redis costs nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txlb.fleet.settings import RedisURL
from txlb.fleet.store import Answer, Entry, IFleetStore, StoreError

__all__ = ["NODES", "PREFIX", "RedisStore"]

NODES = "txlb:{fleet}:nodes"
PREFIX = "txlb:{fleet}:node:"
_RETRY_FIRST = 0.1
_RETRY_MAX = 1.0

# KEYS: the set of nodes, this node's key.  ARGV: body, ttl (ms), key
# prefix, node name.  Returns [this node's entry before (or false), node,
# body, ms left, node, body, ms left, ...] for the other nodes.
_EXCHANGE = """
local out = {redis.call('GET', KEYS[2])}
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[1], ARGV[4])
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[3] .. node
  local body = redis.call('GET', key)
  local left = redis.call('PTTL', key)
  if node == ARGV[4] then
    -- this node: its entry is the one just written
  elseif body and left > 0 then
    out[#out + 1] = node
    out[#out + 1] = body
    out[#out + 1] = left
  elseif not body then
    redis.call('SREM', KEYS[1], node)
  end
end
return out
"""

_LEAVE = """
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
return 1
"""


class _Waiting(StoreError):
    """Not connected, and too soon to try again."""


class _Handshake:
    """
    What txredisapi's protocol asks of its factory when AUTH or SELECT is
    refused: this fails the pending connection with the reason.
    """

    isLazy = False

    def __init__(self) -> None:
        self.error = ""

    def stopTrying(self) -> None:
        pass

    def connectionError(self, why: str) -> None:
        self.error = why


class _OneConnection(Factory):
    """Builds the one protocol given, quietly (no log line per connection)."""

    noisy = False

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Any:
        return self._protocol


@implementer(IFleetStore)
class RedisStore:
    """L{IFleetStore} on one Redis connection, reconnected when needed."""

    log = Logger()

    def __init__(self, reactor: Any, url: RedisURL, timeout: float) -> None:
        """
        @param timeout: for connecting, and for each answer.
        """
        self._reactor = reactor
        self._url = url
        self._timeout = timeout
        self.where = str(url)
        self._protocol: Any = None
        self._retry_at = 0.0
        self._delay = 0.0
        self._last_error = ""

    def exchange(self, node: str, body: bytes, ttl: float) -> Deferred[Answer]:
        d = self._connection()
        d.addCallback(
            lambda p: p.eval(
                _EXCHANGE,
                [NODES, PREFIX + node],
                [body, max(1, round(ttl * 1000)), PREFIX, node],
            )
        )
        d.addCallback(_answer)
        d.addErrback(self._failed)
        return d

    def leave(self, node: str) -> Deferred[None]:
        protocol = self._protocol
        if protocol is None:
            return succeed(None)
        d: Deferred[Any] = protocol.eval(_LEAVE, [NODES, PREFIX + node], [node])
        d.addErrback(lambda f: self.log.warn("fleet: leaving: {why}", why=_why(f)))
        d.addCallback(lambda _: None)
        return d

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.loseConnection()

    # --- the connection -----------------------------------------------------------

    def _connection(self) -> Deferred[Any]:
        protocol = self._protocol
        if protocol is not None and protocol.connected:
            return succeed(protocol)
        self._protocol = None
        now = self._reactor.seconds()
        if now < self._retry_at:
            return fail(
                _Waiting(
                    f"{self._last_error}; next attempt in {self._retry_at - now:.1f}s"
                )
            )
        return self._connect()

    def _connect(self) -> Deferred[Any]:
        from txredisapi import RedisProtocol  # imports the global reactor

        url = self._url
        protocol = RedisProtocol(
            charset=None,
            password=url.password,
            dbid=url.db,
            convertNumbers=False,
            replyTimeout=self._timeout,
        )
        handshake = _Handshake()
        protocol.factory = handshake
        # Its reply timeouts on this reactor, not the global one.
        protocol.callLater = self._reactor.callLater
        endpoint = _endpoint(self._reactor, url, self._timeout)
        ready: Deferred[Any] = Deferred()

        def connected(_: Any) -> None:
            protocol.whenConnected().addCallback(handshaken)
            protocol.whenDisconnected().addCallback(lambda _: lost())

        def handshaken(p: Any) -> None:
            if not ready.called:
                ready.callback(p)

        def lost() -> None:
            if self._protocol is protocol:
                self._protocol = None
            if not ready.called:
                why = handshake.error or "the connection closed during the handshake"
                ready.errback(StoreError(why))

        def refused(failure: Failure) -> None:
            if not ready.called:
                ready.errback(failure)

        endpoint.connect(_OneConnection(protocol)).addCallbacks(connected, refused)
        ready.addTimeout(self._timeout, self._reactor)

        def up(p: Any) -> Any:
            self._protocol = p
            self._delay = 0.0
            self._retry_at = 0.0
            return p

        def down(failure: Failure) -> Failure:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            return failure

        ready.addCallbacks(up, down)
        return ready

    def _failed(self, failure: Failure) -> Failure:
        """Any failure drops the connection and delays the next attempt."""
        if failure.check(_Waiting):
            return failure
        why = _why(failure)
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abortConnection()
        self._delay = min(_RETRY_MAX, max(_RETRY_FIRST, self._delay * 2))
        self._retry_at = self._reactor.seconds() + self._delay
        self._last_error = why
        return Failure(StoreError(why))


def _endpoint(reactor: Any, url: RedisURL, timeout: float) -> Any:
    """
    An address as it is; a name (an ElastiCache endpoint) resolved by the
    reactor's resolver, off the reactor thread, its addresses tried 50 ms
    apart (HostnameEndpoint's default, 0.3 s, would outlast the timeout).
    """
    if isIPAddress(url.host):
        return TCP4ClientEndpoint(reactor, url.host, url.port, timeout=timeout)
    if isIPv6Address(url.host):
        return TCP6ClientEndpoint(reactor, url.host, url.port, timeout=timeout)
    return HostnameEndpoint(
        reactor, url.host, url.port, timeout=timeout, attemptDelay=0.05
    )


def _answer(reply: Any) -> Answer:
    if not isinstance(reply, list) or len(reply) % 3 != 1:
        raise StoreError(f"unexpected answer from the script: {reply!r:.100}")
    before, rest = reply[0], reply[1:]
    return Answer(
        tuple(
            Entry(_text(rest[i]), bytes(rest[i + 1]), int(rest[i + 2]) / 1000.0)
            for i in range(0, len(rest), 3)
        ),
        bytes(before) if before else None,
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _why(failure: Failure) -> str:
    """A failure in a few words, the exception's own."""
    error = failure.value
    if isinstance(error, StoreError):
        return str(error)
    if isinstance(error, defer.TimeoutError):
        return f"no answer within {error.args[0]:g}s"
    name = type(error).__name__
    text = str(error).strip() or name
    return text.splitlines()[0]
