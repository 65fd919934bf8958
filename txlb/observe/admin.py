"""
The admin actions of the stats app: the bearer token (read once at start-up,
compared in constant time, never logged) and what each action does to the
registry.  The routes are the stats app's (L{txlb.observe.webapp}).
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from txlb.config import Config, ConfigError, parse_backend
from txlb.core.backend import Backend
from txlb.core.registry import MAX_WEIGHT, MembershipError, Registry
from txlb.http.headers import TrustedProxies
from txlb.observe.guesses import WrongTokens, client_of
from txlb.observe.jsonout import json_answer

__all__ = ["Admin", "AdminTokenError", "read_admin_token"]

# RFC 6750 b64token.
_BEARER = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MIN_TOKEN_LENGTH = 16
_MAX_BODY = 4096
_WHERE = "POST /api/backends"
_EXAMPLE = '{"name": "web4", "address": "10.0.0.4:8080", "weight": 2}'


class AdminTokenError(Exception):
    """The admin token file is unreadable or unfit; C{str()} says why."""


def read_admin_token(path: str) -> bytes:
    """
    Read the admin token from C{path} (at start-up, never per request).

    Surrounding whitespace is ignored.

    @raise AdminTokenError: unreadable, or not at least 16 characters of
        C{A-Z a-z 0-9 - . _ ~ + /} (then C{=} padding).
    """
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise AdminTokenError(f"cannot read {path!r}: {reason}") from None
    if len(token) < _MIN_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
        raise AdminTokenError(
            f"{path!r} must hold one token of at least {_MIN_TOKEN_LENGTH}"
            " characters from A-Z a-z 0-9 - . _ ~ + / (e.g. from"
            " `openssl rand -hex 32`)"
        )
    return token.encode("ascii")


@attrs.define
class Admin:
    """
    The admin actions over one registry.

    @ivar token: the bearer token the actions need, or L{None} to turn them
        off.
    @ivar describe: a backend's entry as C{/api/server-stats} shows it, the
        answer to an action.
    """

    registry: Registry
    describe: Callable[[Backend], dict[str, Any]]
    # Kept out of repr: the stats app is every event's log_source, and an
    # observer that shows the source would print the token.
    token: bytes | None = attrs.field(default=None, repr=False)
    config: Config = attrs.field(factory=lambda: Config("lb.ini", ()), repr=False)
    # Wrong tokens per client (429 past the limit); none: not limited.
    wrong_tokens: WrongTokens | None = None
    log = Logger()

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def drain(self, request: IRequest, name: str) -> bytes:
        """No new requests to the backend; those in flight finish."""
        return self._act(
            request,
            name,
            lambda b, who: self.registry.set_draining(b, True, f"drained by {who}"),
        )

    def enable(self, request: IRequest, name: str) -> bytes:
        """Undo a drain."""
        return self._act(
            request,
            name,
            lambda b, who: self.registry.set_draining(b, False, f"enabled by {who}"),
        )

    def weight(self, request: IRequest, name: str) -> bytes:
        """Set the backend's weight from a JSON body C{{"weight": W}}."""
        denied = self.deny(request)
        if denied is not None:
            return denied
        body = request.content.read(_MAX_BODY + 1)
        try:
            value = json.loads(body)["weight"] if len(body) <= _MAX_BODY else None
        except (ValueError, TypeError, KeyError):
            value = None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= MAX_WEIGHT
        ):
            return json_answer(
                request,
                {
                    "error": 'expected a JSON body {"weight": W} with W above 0'
                    f" and at most {MAX_WEIGHT:g}"
                },
                400,
            )
        return self._act(
            request,
            name,
            lambda b, who: self.registry.set_weight(b, float(value), f"set by {who}"),
            checked=True,
        )

    def add(self, request: IRequest) -> bytes:
        """
        Add a backend (source C{admin}) from a JSON object of lb.ini's
        ``[backend:NAME]`` keys and its C{name}, checked exactly as lb.ini
        is: 201, 400 (with lb.ini's one-line error) or 409 (name or
        address in use).
        """
        denied = self.deny(request)
        if denied is not None:
            return denied
        body = request.content.read(_MAX_BODY + 1)
        try:
            given = json.loads(body) if len(body) <= _MAX_BODY else None
        except ValueError:
            given = None
        if not isinstance(given, dict):
            return json_answer(
                request, {"error": f"{_WHERE}: expected a JSON object: {_EXAMPLE}"}, 400
            )
        name = given.pop("name", None)
        if not isinstance(name, str):
            return json_answer(
                request,
                {"error": f"{_WHERE}: name: missing; expected e.g. {_EXAMPLE}"},
                400,
            )
        try:
            spec = parse_backend(
                name, _as_ini(name, given), self.config, "admin", _WHERE
            )
        except ConfigError as e:
            return json_answer(request, {"error": str(e)}, 400)
        who = who_asked(request)
        try:
            backend = self.registry.add(spec, f"added by {who}")
        except MembershipError as e:
            return json_answer(
                request, {"error": f"backend {name} not added: {e}"}, 409
            )
        self.log.info(
            "admin add of backend {backend} at {address} by {who}",
            backend=name,
            address=str(spec.address),
            who=who,
        )
        return json_answer(request, self.describe(backend), 201)

    def delete(self, request: IRequest, name: str) -> bytes:
        """
        Take out a backend the admin API added: it drains (no new requests;
        those in flight finish), then it is gone: 202.
        """
        denied = self.deny(request)
        if denied is not None:
            return denied
        try:
            backend = self.registry.get(name)
        except KeyError:
            return json_answer(request, {"error": f"no backend is named {name!r}"}, 404)
        if backend.source != "admin":
            return json_answer(
                request,
                {
                    "error": f"backend {name} comes from {backend.source}, which"
                    " would bring it back: remove it there, or drain it"
                    f" (POST /api/backends/{name}/drain)"
                },
                409,
            )
        who = who_asked(request)
        self.registry.remove(backend, f"removed by {who}")
        self.log.info(
            "admin delete of backend {backend} by {who}", backend=name, who=who
        )
        return json_answer(request, self.describe(backend), 202)

    def deny(self, request: IRequest) -> bytes | None:
        """An error answer unless the request carries the admin token."""
        token = self.token
        if token is None:
            return json_answer(
                request,
                {"error": "admin actions are off: set admin_token_file in [txlb]"},
                403,
            )
        header = request.getHeader(b"authorization")
        match = _BEARER.fullmatch(header.strip()) if header else None
        if match is None:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="txlb"')
            return json_answer(
                request,
                {"error": "an Authorization: Bearer <admin token> header is needed"},
                401,
            )
        guesses = self.wrong_tokens
        networks = self.config.proxy.trusted_proxies
        client = client_of(request, TrustedProxies(networks) if networks else None)
        if guesses is not None:
            # Judged before the token: past the limit, no answer says
            # whether a guess was right.
            wait = guesses.wait(client)
            if wait:
                request.setHeader(b"Retry-After", b"%d" % math.ceil(wait))
                return json_answer(
                    request, {"error": "too many wrong admin tokens; wait"}, 429
                )
        if not hmac.compare_digest(match.group(1), token):
            if guesses is not None:
                guesses.failed(client)
            self.log.warn("wrong admin token from {client}", client=client)
            return json_answer(request, {"error": "wrong admin token"}, 403)
        return None

    def _act(
        self,
        request: IRequest,
        name: str,
        action: Callable[[Backend, str], None],
        checked: bool = False,
    ) -> bytes:
        if not checked:
            denied = self.deny(request)
            if denied is not None:
                return denied
        try:
            backend = self.registry.get(name)
        except KeyError:
            return json_answer(request, {"error": f"no backend is named {name!r}"}, 404)
        who = who_asked(request)
        action(backend, who)
        self.log.info(
            "admin {action} on backend {backend} by {who}",
            action=request.path.decode("latin-1").rsplit("/", 1)[-1],
            backend=name,
            who=who,
        )
        return json_answer(request, self.describe(backend))


def _as_ini(name: str, given: Mapping[str, Any]) -> dict[str, str]:
    """A JSON object's values as lb.ini text (strings and numbers only)."""
    items = {}
    for key, value in given.items():
        if isinstance(value, str):
            items[key] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            items[key] = repr(value)
        else:
            raise ConfigError(
                _WHERE, "expected a string or a number", f"backend:{name}", str(key)
            )
    return items


def who_asked(request: IRequest) -> str:
    """The admin's address, for the backend's history."""
    client = request.getClientAddress()
    return f"admin from {getattr(client, 'host', 'unknown')}"
