"""
The answer to a request over its client's rate limit (C{[ratelimit]},
L{txlb.core.ratelimit}): C{429 Too Many Requests} with C{Retry-After}, the
seconds until its bucket holds a token again (rounded up, at least 1).
Nothing of the request reaches a backend: no exchange is made for it, and
its body, if any, is read and dropped so the connection can go on.
"""

from __future__ import annotations

import math

from txlb.http.request import ClientRequest

__all__ = ["TooManyRequests"]


class TooManyRequests:
    """The handler (L{txlb.http.request.RequestHandler}) of a refused request."""

    __slots__ = ("request", "retry_after")

    waited_for = True  # a shutdown lets the answer out

    def __init__(self, request: ClientRequest, seconds: float) -> None:
        self.request = request
        self.retry_after = b"%d" % max(1, math.ceil(seconds))

    def start(self) -> None:
        """Answer now, or once the body is in."""
        request = self.request
        request.handler = self
        request.body = []
        if request.complete:
            self._answer()

    def client_body(self, data: bytes) -> None:
        pass  # dropped

    def client_body_done(self) -> None:
        self._answer()

    def client_failed(self) -> None:
        pass  # the front end answers a broken request itself

    def client_lost(self) -> None:
        pass

    def _answer(self) -> None:
        self.request.reply(429, b"too many requests", self.retry_after)
