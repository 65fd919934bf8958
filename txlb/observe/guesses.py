"""
Wrong admin tokens, limited per client: L{BURST} at once, then one more
every L{INTERVAL} seconds (the generic cell rate algorithm, as the rate
limit's buckets).  A client past its limit is answered C{429} with
C{Retry-After} before its token is looked at, so guessing gets no answer
at all, right or wrong, until the wait is over; a right token costs
nothing.  Behind a trusted proxy the client is the one it names.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from txlb.http.headers import TrustedProxies, forwarded_chain

__all__ = ["BURST", "INTERVAL", "WrongTokens", "client_of"]

BURST = 5
"""Wrong tokens a client may send at once."""

INTERVAL = 10.0
"""Seconds for each wrong token after those (six a minute)."""

_MAX_CLIENTS = 10_000


class WrongTokens:
    """Each client's wrong admin tokens (see the module docstring)."""

    def __init__(
        self, clock: IReactorTime, burst: int = BURST, interval: float = INTERVAL
    ) -> None:
        self._clock = clock
        self._burst = burst
        self._interval = interval
        # client -> when its next wrong token would be on time (TAT)
        self._tats: dict[str, float] = {}

    def wait(self, client: str) -> float:
        """Seconds until C{client} may try a token again (0: now)."""
        now = self._clock.seconds()
        tat = self._tats.get(client, now)
        ahead = tat - now - (self._burst - 1) * self._interval
        return ahead if ahead > 1e-9 else 0.0

    def failed(self, client: str) -> None:
        """C{client} sent a wrong token."""
        now = self._clock.seconds()
        tats = self._tats
        tats[client] = max(tats.get(client, now), now) + self._interval
        if len(tats) > _MAX_CLIENTS:
            # Those whose wait is over are the same as never seen.
            self._tats = {c: t for c, t in tats.items() if t > now}

    def __len__(self) -> int:
        return len(self._tats)


def client_of(request: IRequest, trusted: TrustedProxies | None) -> str:
    """The client's address: its peer's, or behind a trusted proxy the one it names."""
    peer = str(getattr(request.getClientAddress(), "host", ""))
    if trusted is None or peer not in trusted:
        return peer
    chain = request.requestHeaders.getRawHeaders(b"x-forwarded-for", [])
    return forwarded_chain(chain, b"", trusted)[0].decode("latin-1") or peer
