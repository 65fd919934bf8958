"""
txlb's own log (not the access log) as one JSON object per line, for
journald and log shippers.  twistd takes the observer factory by name:

    twistd -n --logger=txlb.observe.jsonlog.observer txlb --config lb.ini

Each event becomes one line (RFC 8259 JSON, ASCII only, so a newline in a
message never splits it), for example::

    {"time":"2026-12-01T09:25:13.473832Z","ts":1796117113.473832,
     "level":"info","namespace":"txlb.core.registry.Registry",
     "message":"backend web2 is ejected: 5 consecutive failures (last:
     connection failed); ejected for 30s","backend":"web2",
     "state":"ejected","reason":"5 consecutive failures (last: connection
     failed); ejected for 30s"}

(one line in the log; wrapped here).  The keys: C{time} (ISO 8601, UTC) and
C{ts} (Unix seconds) of the event; C{level} (C{debug}, C{info}, C{warn},
C{error}, C{critical}); C{namespace}, the emitting module's logger;
C{system}, when the event has one; C{message}, the formatted text; then
the event's own keyword fields whose values are JSON (strings, numbers,
booleans, null, lists and objects of those), others being in C{message}
already; and C{traceback}, the text of a failure logged with
C{log.failure}.  A field named like one of those keys is written with an
C{event_} prefix instead.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["JSONLinesObserver", "flatten", "observer"]

_RESERVED = frozenset(
    ("time", "ts", "level", "namespace", "system", "message", "traceback")
)
# What twisted.python.log puts in its (legacy) events beside the text.
_LEGACY = frozenset(("message", "format", "isError", "system", "time", "why"))


def _json_value(value: Any) -> bool:
    """Whether C{value} is plain JSON (no object that needs a repr)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _iso(seconds: float) -> str:
    when = datetime.fromtimestamp(seconds, UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def flatten(event: LogEvent) -> dict[str, Any]:
    """One twisted.logger event as a flat JSON-ready dictionary."""
    seconds = event.get("log_time")
    if not isinstance(seconds, int | float):
        seconds = 0.0
    level = event.get("log_level")
    flat: dict[str, Any] = {
        "time": _iso(seconds),
        "ts": round(seconds, 6),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", "-"),
    }
    system = event.get("log_system")
    if isinstance(system, str):
        flat["system"] = system
    legacy = "isError" in event and "message" in event
    failure = event.get("log_failure")
    if failure is None and legacy:
        failure = event.get("failure")
    message = formatEvent(event)
    if not message and legacy and isinstance(event.get("why"), str):
        message = event["why"]
    if not message and isinstance(failure, Failure):
        message = failure.getErrorMessage()
    flat["message"] = message
    for key, value in event.items():
        if (
            not isinstance(key, str)
            or key.startswith("log_")
            or key == "failure"
            or (legacy and key in _LEGACY)
            or not _json_value(value)
        ):
            continue
        flat["event_" + key if key in _RESERVED else key] = value
    if isinstance(failure, Failure):
        flat["traceback"] = failure.getTraceback()
    return flat


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes each event to a text file as one line of JSON, and flushes."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: LogEvent) -> None:
        line = json.dumps(flatten(event), separators=(",", ":"), allow_nan=False)
        self._out.write(line + "\n")
        self._out.flush()


_in_use = False


def observer() -> ILogObserver:
    """
    The factory twistd's C{--logger} option names: JSON lines on standard
    output (use it with C{-n}, as under systemd; a daemonised twistd has no
    standard output).
    """
    global _in_use
    _in_use = True
    return JSONLinesObserver(sys.stdout)


def in_use() -> bool:
    """Whether this process logs JSON lines (its worker processes then do too)."""
    return _in_use
