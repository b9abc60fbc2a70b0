"""RFC 3339 timestamps <-> nanoseconds since the epoch."""

from __future__ import annotations

import calendar
import re
import time


def rfc3339_nano(ts_ns: int) -> str:
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


_seconds_cache: dict[str, int] = {}


class BadTimestamp(ValueError):
    pass


_REST = re.compile(r"(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))")


def parse_timestamp(text: str) -> int:
    """RFC 3339 with 0-9 fraction digits and Z or +hh:mm -> exact nanoseconds since the epoch."""
    base = text[:19]
    seconds = _seconds_cache.get(base)
    if seconds is None:
        seconds = _base_seconds(text, base)
    # Docker's usual form: 9 fraction digits, Z (it drops trailing zeros, so not always).
    if len(text) == 30 and text[19] == "." and text[29] == "Z":
        fraction = text[20:29]
        if fraction.isdigit():
            return seconds * 1_000_000_000 + int(fraction)
    match = _REST.fullmatch(text, 19)
    if match is None:
        raise BadTimestamp(f"bad timestamp: {text!r}")
    digits, utc, sign, hours, minutes = match.groups()
    nanos = int(digits.ljust(9, "0")) if digits else 0
    offset = 0 if utc else (int(hours) * 3600 + int(minutes) * 60) * (1 if sign == "+" else -1)
    return (seconds - offset) * 1_000_000_000 + nanos


def _base_seconds(text: str, base: str) -> int:
    try:
        if len(base) != 19 or base[4] != "-" or base[7] != "-" or base[10] not in "Tt" or base[13] != ":" or base[16] != ":":
            raise ValueError
        seconds = calendar.timegm(
            (int(base[0:4]), int(base[5:7]), int(base[8:10]), int(base[11:13]), int(base[14:16]), int(base[17:19]), 0, 0, 0)
        )
    except ValueError:
        raise BadTimestamp(f"bad timestamp: {text!r}") from None
    if len(_seconds_cache) > 4096:  # lines of one second share this; keep it small
        _seconds_cache.clear()
    _seconds_cache[base] = seconds
    return seconds
