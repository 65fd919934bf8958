"""
Parsing of the backend's tunable settings: service time, error rate and
capacity.

These parsers are shared by the command line and the runtime control routes,
so both accept the same spellings and give the same one-line messages.
"""

from __future__ import annotations

import math
import re
from random import Random

import attrs

__all__ = [
    "NO_DELAY",
    "ServiceTime",
    "SettingError",
    "parse_capacity",
    "parse_duration",
    "parse_error_rate",
    "parse_service_time",
]

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>us|ms|s)?")


class SettingError(ValueError):
    """A setting's text is not valid; C{str()} is a one-line message."""


def _seconds(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise SettingError("not a duration")
    value = float(match["number"])
    unit = match["unit"]
    if unit is None:
        if value != 0:
            raise SettingError("a non-zero duration needs a unit (us, ms or s)")
        return 0.0
    return value * _UNITS[unit]


def parse_duration(text: str) -> float:
    """
    Parse a duration such as C{5ms}, C{0.2s}, C{250us} or C{0}.

    A bare number must be zero: C{5} alone is ambiguous.

    @return: seconds.
    @raise SettingError: on anything else.
    """
    try:
        return _seconds(text)
    except SettingError as e:
        raise SettingError(
            f"invalid duration {text!r}: {e}; expected e.g. 5ms, 0.2s, 250us or 0"
        ) from None


def _format_seconds(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{round(seconds * 1000, 6):g}ms"


@attrs.frozen
class ServiceTime:
    """
    How long the main route takes: uniform in [low, high] seconds.

    A fixed time has C{low == high}.
    """

    low: float
    high: float

    @classmethod
    def fixed(cls, seconds: float) -> ServiceTime:
        return cls(seconds, seconds)

    def sample(self, rng: Random) -> float:
        """One service time drawn from C{rng}."""
        if self.low == self.high:
            return self.low
        return rng.uniform(self.low, self.high)

    def __str__(self) -> str:
        if self.low == self.high:
            return _format_seconds(self.low)
        return f"{_format_seconds(self.low)}-{_format_seconds(self.high)}"


NO_DELAY = ServiceTime.fixed(0.0)


def parse_service_time(text: str) -> ServiceTime:
    """
    Parse a fixed duration (C{5ms}) or a uniform range (C{10ms-50ms}).

    @raise SettingError: on a bad duration or a range whose low end is above
        its high end.
    """
    low_text, dash, high_text = text.strip().partition("-")
    try:
        low = _seconds(low_text)
        high = _seconds(high_text) if dash else low
    except SettingError as e:
        raise SettingError(
            f"invalid delay {text!r}: {e}; expected e.g. 5ms, 0.2s, 0 or 10ms-50ms"
        ) from None
    if low > high:
        raise SettingError(
            f"invalid delay {text!r}: the range's low end is above its high end"
        )
    return ServiceTime(low, high)


def parse_error_rate(text: str) -> float:
    """
    Parse a fraction of requests to fail, from C{0} to C{1}.

    @raise SettingError: if it is not a number in [0, 1].
    """
    try:
        rate = float(text.strip())
    except ValueError:
        raise SettingError(
            f"invalid error rate {text!r}: expected a number from 0 to 1"
        ) from None
    if math.isnan(rate) or not 0.0 <= rate <= 1.0:
        raise SettingError(f"invalid error rate {text!r}: must be from 0 to 1")
    return rate


def parse_capacity(text: str) -> int:
    """
    Parse how many requests may be in service at once; C{0} is unlimited.

    @raise SettingError: if it is not a whole number >= 0.
    """
    try:
        capacity = int(text.strip())
    except ValueError:
        raise SettingError(
            f"invalid capacity {text!r}: expected a whole number >= 0"
        ) from None
    if capacity < 0:
        raise SettingError(f"invalid capacity {text!r}: must be >= 0")
    return capacity
