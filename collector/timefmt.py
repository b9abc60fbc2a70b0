"""Nanosecond timestamps as RFC 3339 text."""

from __future__ import annotations

import time


def rfc3339_nano(ts_ns: int) -> str:
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"
