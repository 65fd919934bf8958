"""
An exchange whose backend may follow the request (L{AffinityExchange}): its
key, for C{algorithm = hash} (L{txlb.http.keys}), and its sticky cookie
(L{txlb.http.sticky}).  The router uses it only when one of the two is
configured, so that without them a request takes no step more than the
plain L{txlb.http.exchange.Exchange}.

Per request, with hash: one key read (a header look-up, a cookie or query
scan, or the client address) and its BLAKE2b hash on the ring; with sticky:
a scan of the C{Cookie} headers, which also takes txlb's cookie out, one
dict look-up, and a C{Set-Cookie} on the responses that stick a client.
"""

from __future__ import annotations

from txlb.core.backend import Backend
from txlb.http.exchange import Exchange

__all__ = ["AffinityExchange"]


class AffinityExchange(Exchange):
    """
    An L{Exchange} that reads the request's hash key and sticky cookie
    before choosing, tries the backend the cookie names first, and sticks
    the client to whichever backend answers.

    @ivar key: the request's C{hash_key}, or L{None}.
    @ivar cookie: the value of the request's sticky cookie, or L{None}.
    @ivar stuck: the backend the client is stuck to: the one its cookie
        named (a hit), or the one a C{Set-Cookie} named since.
    """

    __slots__ = ("cookie", "key", "stuck")

    def begin(self) -> None:
        proxy = self.proxy
        request = self.request
        key_of = proxy.key_of
        self.key = key_of(request) if key_of is not None else None
        sticky = proxy.sticky
        # Taken out before the backend's request head is built.
        self.cookie = sticky.take_cookie(request) if sticky is not None else None
        self.stuck: Backend | None = None
        super().begin()

    def _pick(self) -> None:
        proxy = self.proxy
        registry = proxy.registry
        sticky = proxy.sticky
        if sticky is None:
            self.waiter = registry.queue.lease_or_wait(self, self.tried, self.key)
            return
        lease, why = sticky.lease(self.cookie, self.tried)
        if lease is not None:
            self.stuck = lease.backend
            self.leased(lease)
            return
        decisions = registry.decisions
        decisions.note = {"sticky": "miss", "why": why}
        try:
            self.waiter = registry.queue.lease_or_wait(self, self.tried, self.key)
        finally:
            decisions.note = None

    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        sticky = self.proxy.sticky
        lease = self.lease
        if (
            sticky is not None
            and self.attached
            and lease is not None
            and lease.backend is not self.stuck
        ):
            backend = lease.backend
            self.stuck = backend
            cookie = sticky.set_cookie(backend, self.request)
            headers = [*headers, (b"Set-Cookie", cookie)]
        super().upstream_head(status, reason, headers)
