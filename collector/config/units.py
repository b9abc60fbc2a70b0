"""Durations (200ms, 5s, 1h) and sizes (512KiB, 16MiB) as config values, and the msgspec hooks
that decode and encode them."""

from __future__ import annotations

import re
from typing import Any


class Duration(float):
    """Seconds; written as a number of seconds or with a unit: 200ms, 5s, 1m, 1h, 7d."""


class ByteSize(int):
    """Bytes; written as a number or with a unit: 512KiB, 16MiB, 1MB, 1GiB."""


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> Duration:
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _NUMBER_UNIT.match(str(value))
        unit = match.group(2).lower() if match else None
        if not match or (unit or "s") not in _DURATION_UNITS:
            raise ValueError(f"not a duration (use e.g. 200ms, 5s, 1h): {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[unit or "s"]
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    return Duration(seconds)


def parse_size(value: object) -> ByteSize:
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _NUMBER_UNIT.match(str(value))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _SIZE_UNITS:
            raise ValueError(f"not a size (use e.g. 512KiB, 16MiB): {value!r}")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 0:
        raise ValueError(f"size must not be negative: {value!r}")
    return ByteSize(size)


def decode_hook(kind: type, value: Any) -> Any:
    """msgspec's dec_hook: Duration and ByteSize from a number or their text with a unit."""
    if kind is Duration:
        return parse_duration(value)
    if kind is ByteSize:
        return parse_size(value)
    raise NotImplementedError(kind)


def encode_hook(value: Any) -> Any:
    """msgspec's enc_hook: Duration and ByteSize (subclasses msgspec does not know) as plain numbers."""
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    raise NotImplementedError(type(value))
