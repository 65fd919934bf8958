"""The stats app's JSON answers and query arguments."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

__all__ = ["int_arg", "json_answer"]


def json_answer(request: IRequest, value: Any, code: int = 200) -> bytes:
    """C{value} as the JSON body of an uncached answer with status C{code}."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def int_arg(request: IRequest, name: bytes, default: int, top: int) -> int:
    """A query argument as a whole number from 0 to C{top} (else C{default})."""
    values = request.args.get(name)
    if not values:
        return default
    try:
        return max(0, min(top, int(values[0])))
    except ValueError:
        return default
