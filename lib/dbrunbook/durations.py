"""Durations as people write them on a command line or in a project file: ``90s``, ``30m``, ``2h``,
``1h30m``, ``1d``."""
from __future__ import annotations

import re
from datetime import timedelta

from .errors import SpecError

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """``1h30m`` as a timedelta; anything else is a :class:`SpecError` saying what is accepted."""
    compact = "".join(str(text).split()).lower()
    parts = _PART.findall(compact)
    if not compact or "".join(a + u for a, u in parts) != compact:
        raise SpecError(what, f"{text!r} is not a duration: write it as 90s, 30m, 2h, 1h30m or 1d")
    total = timedelta()
    for amount, unit in parts:
        total += timedelta(**{_UNITS[unit]: float(amount)})
    if total <= timedelta(0):
        raise SpecError(what, f"{text!r}: a duration must be longer than nothing")
    return total
