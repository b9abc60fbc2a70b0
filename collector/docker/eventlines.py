"""Pure: the Engine API's events body (one JSON object per line) -> events, with a line limit of our own.

An event is untrusted input: Docker copies every container label into `Actor.Attributes`, so one
`docker run` with large labels makes an event of any size. aiohttp's own line reader raises
`LineTooLong` (512 KiB in 3.14; a `ValueError` at 128 KiB before), which would end discovery, and
with `since=` the same event would be replayed on every reconnect. Here a line longer than the
limit is discarded as it streams (memory stays bounded) and reported as `Skipped`, with what its
first and last bytes still say: which container and action, and its `timeNano`, so that a resume
goes past it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_EVENT_BYTES = 1 << 20  # twice aiohttp 3.14's limit: 600 KB of labels still parse
_KEEP = 4096  # bytes kept of each end of an oversized line
_TIME_NANO = re.compile(rb'"timeNano"\s*:\s*(\d{1,25})')
_ACTION = re.compile(rb'"Action"\s*:\s*"([a-z_:]{1,40})"')
_ID = re.compile(rb'"ID"\s*:\s*"([0-9a-f]{12,64})"')


@dataclass(frozen=True, slots=True)
class Skipped:
    """A line that is not an event we can use: `reason` is `too_large` or `bad_json`."""

    reason: str
    size: int
    time_nano: int = 0  # 0: not found
    action: str = ""
    container_id: str = ""


Event = dict[str, Any] | Skipped


def _skipped(reason: str, size: int, head: bytes, tail: bytes) -> Skipped:
    """What the two ends of a line still say. Docker writes Action and Actor.ID before the
    attributes and timeNano last, so they survive in the ends kept of an oversized line."""
    time_nano = _TIME_NANO.findall(tail)
    action = _ACTION.search(head)
    container_id = _ID.search(head)
    return Skipped(
        reason, size,
        time_nano=int(time_nano[-1]) if time_nano else 0,
        action=action.group(1).decode() if action else "",
        container_id=container_id.group(1).decode() if container_id else "",
    )


def decode(line: bytes) -> Event | None:
    """One complete line: the event, a `Skipped` one, or None for a blank line."""
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return _skipped("bad_json", len(line), line[:_KEEP], line[-_KEEP:])
    if not isinstance(event, dict):
        return _skipped("bad_json", len(line), line[:_KEEP], line[-_KEEP:])
    return event


class EventLines:
    """Splits a byte stream into events; holds at most `limit` bytes of an unfinished line."""

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()
        # While an oversized line streams by: its size so far, its head, the last bytes seen.
        self._over: tuple[int, bytes, bytes] | None = None

    @property
    def held(self) -> int:
        """Bytes held for the unfinished line (bounded by the limit plus both kept ends)."""
        return len(self._buffer) + (len(self._over[1]) + len(self._over[2]) if self._over else 0)

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            self._add(piece)
            if end < 0:
                break
            event = self._finish()
            if event is not None:
                events.append(event)
            start = end + 1
        return events

    def _add(self, piece: bytes) -> None:
        if self._over is not None:
            size, head, tail = self._over
            self._over = (size + len(piece), head, (tail + piece)[-_KEEP:])
        elif len(self._buffer) + len(piece) > self._limit:
            whole = bytes(self._buffer) + piece
            self._over = (len(whole), whole[:_KEEP], whole[-_KEEP:])
            self._buffer.clear()
        else:
            self._buffer += piece

    def _finish(self) -> Event | None:
        if self._over is not None:
            size, head, tail = self._over
            self._over = None
            return _skipped("too_large", size, head, tail)
        line = bytes(self._buffer)
        self._buffer.clear()
        return decode(line)
