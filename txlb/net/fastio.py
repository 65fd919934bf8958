"""
Cheaper socket I/O on Twisted's reactor, for the relay and the proxies.

Two costs that every relayed chunk pays on a stock reactor are cut here:

  - L{install} makes an L{EPollReactor} dispatch each I/O event straight to
    its C{_doReadOrWrite}.  The stock C{doPoll} wraps every event in
    C{twisted.python.log.callWithLogger}, which asks the selectable for its
    C{logPrefix()} and pushes a legacy log context around the handler: about
    a quarter of the balancer's CPU time on small relayed chunks.  What is
    lost: events that legacy observers see while an I/O handler runs no
    longer carry that connection's prefix as their C{"system"} (twistd's log
    file shows C{-} there).  C{twisted.logger} events are unaffected
    (their namespace names their source), and an exception that escapes a
    handler is still logged, not raised out of the reactor.

  - L{write} sends at once when a TCP transport has nothing waiting to be
    written, as asyncio's selector transports do, and hands only what the
    kernel did not take to the transport's own C{write}.  A stock
    C{transport.write} always buffers, registers the socket for writing
    (an C{epoll_ctl}), waits for the next reactor pass, sends, and
    unregisters it (another C{epoll_ctl}).
"""

from __future__ import annotations

import errno
from types import MethodType
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger

__all__ = ["install", "installed", "write"]

_log = Logger(namespace="txlb.fastio")

# Exactly these (not subclasses, which may write differently): plain TCP
# connections whose bytes go to self.socket as they are.
_PLAIN_TCP = frozenset({tcp.Server, tcp.Client})


def write(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending it at once if that can be done
    exactly as the transport itself would have sent it.

    That is when C{transport} is a plain TCP connection (a C{tcp.Server} or
    C{tcp.Client}, TLS not started) that is connected, not closing or
    aborted (an aborted one must send nothing more), and has
    nothing buffered: then C{socket.send} takes what the kernel accepts and
    the rest goes through C{transport.write}, so ordering, the producer's
    pause once more than C{bufferSize} is buffered, C{loseConnection} after
    a write and the half-close all behave as with C{transport.write} alone.
    A send that fails (C{EPIPE}, C{ECONNRESET}...) passes the whole of
    C{data} to C{transport.write}, whose next write attempt fails the same
    way and reports the lost connection as Twisted always does.  Any other
    transport (TLS, UNIX, a test's C{StringTransport}) gets
    C{transport.write(data)}.

    Each call is its own C{send}: join what belongs together (a head and
    its body) into one C{data} rather than calling this twice.
    """
    if (
        type(transport) in _PLAIN_TCP
        and not transport.dataBuffer
        and not transport._tempDataLen
        and transport.connected
        and not transport.disconnecting
        and not transport._aborting
        and not transport.TLS
        and not transport._writeDisconnecting
        and not transport._writeDisconnected
        and data
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # EAGAIN, EINTR: buffer it all.  Anything else: the transport's
            # own write attempt meets the same error and reports it.
            sent = 0
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


def installed(reactor: Any) -> bool:
    """Whether L{install} changed C{reactor}."""
    return getattr(reactor, "_txlb_fastio", False)


def install(reactor: Any) -> bool:
    """
    Give C{reactor} the direct event dispatch described above, if it is
    exactly Twisted's C{EPollReactor} (any other reactor, or a subclass,
    is left alone).

    @return: whether C{reactor} now dispatches directly.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # not Linux
        return False
    if type(reactor) is not EPollReactor:
        return False
    if not installed(reactor):
        # An instance attribute shadows the class's method.
        target: Any = reactor
        target.doPoll = target.doIteration = MethodType(_do_poll, reactor)
        target._txlb_fastio = True
    return True


def _do_poll(self: Any, timeout: float | None) -> None:
    """
    C{EPollReactor.doPoll} without the legacy log context around each
    event; otherwise the same (an interrupted wait returns, an event for a
    descriptor removed meanwhile is skipped).
    """
    if timeout is None:
        timeout = -1  # Wait indefinitely.
    selectables = self._selectables
    try:
        events = self._poller.poll(timeout, len(selectables))
    except OSError as err:
        if err.errno == errno.EINTR:
            return
        raise
    do_read_or_write = self._doReadOrWrite
    for fd, event in events:
        try:
            selectable = selectables[fd]
        except KeyError:
            continue
        try:
            do_read_or_write(selectable, fd, event)
        except KeyboardInterrupt:
            raise
        except BaseException:
            # callWithLogger logged these too (_doReadOrWrite handles the
            # errors of doRead and doWrite; this is for connectionLost).
            _log.failure("unhandled error in an I/O handler")
