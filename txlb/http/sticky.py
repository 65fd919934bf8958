"""
Sticky sessions, C{[txlb] sticky = cookie:NAME}, beside any algorithm.

A response to a client that is not stuck yet carries C{Set-Cookie: NAME=V;
Path=/; HttpOnly; SameSite=Lax} (C{Secure} when the client came over HTTPS,
itself or through a trusted proxy that says so in C{X-Forwarded-Proto};
C{Max-Age} when C{sticky_max_age} is set).  C{V} is opaque: 16 hex digits
of a BLAKE2b hash of the backend's name and address (L{cookie_value}), the
same in every process, after every reload and restart, and no address in
sight.  A later request with that cookie goes to its backend while the
backend is in rotation, has room and was not tried for this request;
otherwise it is balanced as usual and the response sticks it to its new
backend.  A value that names no backend (forged, or of a backend since
gone) is ignored, never an error.

The cookie is taken out of the request before it goes to the backend
(HAProxy's C{cookie ... insert indirect}): the backend never sees txlb's
own cookie; the client's other cookies pass unchanged.
"""

from __future__ import annotations

from collections import Counter
from hashlib import blake2b
from typing import Any

from zope.interface import implementer

from txlb.config import Address
from txlb.core.backend import Backend
from txlb.core.listeners import BackendListener, IBackendListener
from txlb.core.registry import Lease, Registry
from txlb.http.headers import TrustedProxies
from txlb.http.request import ClientRequest

__all__ = ["StickyCookies", "cookie_value"]


def cookie_value(name: str, address: Address) -> bytes:
    """The opaque value that names a backend in the cookie."""
    data = f"{name}\x00{address}".encode()
    return blake2b(data, digest_size=8, person=b"txlb-sticky").hexdigest().encode()


@implementer(IBackendListener)
class StickyCookies(BackendListener):
    """
    The sticky cookie: which value names which backend (kept as the
    registry announces its backends), how a request's cookie is read and
    taken out, and the counts the views show.

    @ivar hits: requests sent to the backend their cookie named.
    @ivar misses: requests balanced again, by reason (in C{reasons}).
    @ivar set: responses that set the cookie.
    """

    def __init__(
        self,
        registry: Registry,
        name: bytes,
        max_age: float,
        trusted: TrustedProxies | None,
    ) -> None:
        self.name = name
        self._registry = registry
        self._trusted = trusted
        self._by_value: dict[bytes, Backend] = {}
        self._values: dict[Backend, bytes] = {}
        attributes = b"; Path=/; HttpOnly; SameSite=Lax"
        if max_age > 0:
            attributes += b"; Max-Age=%d" % max(1, round(max_age))
        self._attributes = attributes
        self.hits = 0
        self.misses = 0
        self.reasons: Counter[str] = Counter()
        self.set = 0
        registry.subscribe(self)

    # --- the registry's announcements -----------------------------------------------

    def backend_added(self, backend: Backend) -> None:
        value = cookie_value(backend.name, backend.address)
        self._by_value[value] = backend
        self._values[backend] = value

    def backend_removed(self, backend: Backend) -> None:
        value = self._values.pop(backend, None)
        if value is not None and self._by_value.get(value) is backend:
            del self._by_value[value]

    # --- requests --------------------------------------------------------------------

    def take_cookie(self, request: ClientRequest) -> bytes | None:
        """
        Take txlb's cookie out of the request's C{Cookie} headers (a header
        left empty is dropped) and return its value, if any.
        """
        name = self.name
        found: bytes | None = None
        headers = request.headers
        for i in range(len(headers) - 1, -1, -1):
            header, value = headers[i]
            if header.lower() != b"cookie" or name not in value:
                continue
            kept = []
            for pair in value.split(b";"):
                key, sep, content = pair.strip().partition(b"=")
                if sep and key == name:
                    found = content.strip().strip(b'"')
                elif pair.strip():
                    kept.append(pair.strip())
            if kept:
                headers[i] = (header, b"; ".join(kept))
            else:
                del headers[i]
        return found

    def lease(
        self, value: bytes | None, exclude: list[Backend]
    ) -> tuple[Lease | None, str]:
        """
        A lease on the backend C{value} names, if it may take the request;
        else L{None} and why not (for the decision log).
        """
        if value is None:
            return self._miss("no cookie", "no cookie")
        backend = self._by_value.get(value)
        if backend is None:
            return self._miss(
                "unknown cookie", "the cookie names no backend (forged or stale)"
            )
        lease = self._registry.acquire_on(
            backend, exclude, {"sticky": "hit", "cookie": self.name.decode()}
        )
        if lease is not None:
            self.hits += 1
            return lease, ""
        if backend in exclude:
            return self._miss("tried", f"{backend.name} was tried already")
        if backend.full:
            return self._miss("full", f"{backend.name} is at its max_connections")
        return self._miss(
            "out of rotation", f"{backend.name} is {backend.state}, out of rotation"
        )

    def _miss(self, reason: str, why: str) -> tuple[None, str]:
        self.misses += 1
        self.reasons[reason] += 1
        return None, why

    def set_cookie(self, backend: Backend, request: ClientRequest) -> bytes:
        """The C{Set-Cookie} value that sticks the client to C{backend}."""
        self.set += 1
        value = self._values.get(backend) or cookie_value(backend.name, backend.address)
        header = self.name + b"=" + value + self._attributes
        if self._secure(request):
            header += b"; Secure"
        return header

    def _secure(self, request: ClientRequest) -> bool:
        if request.secure:
            return True
        trusted = self._trusted
        if trusted is None or request.peer not in trusted:
            return False
        proto = request.value(b"x-forwarded-proto")
        return proto is not None and proto.split(b",")[0].strip().lower() == b"https"

    def snapshot(self) -> dict[str, Any]:
        """What the stats and the decision log show."""
        return {
            "cookie": self.name.decode(),
            "hits": self.hits,
            "misses": self.misses,
            "miss_reasons": dict(self.reasons),
            "set_cookies": self.set,
        }
