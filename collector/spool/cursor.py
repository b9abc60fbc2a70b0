"""The spool's cursor file: each segment's delivered prefix, so a restart re-sends at most what was
delivered since the last checkpoint (and what was delivered out of order before it)."""

from __future__ import annotations

import logging
import os
import time

import msgspec

from collector.durable import fsync_directory

log = logging.getLogger(__name__)

CURSOR_NAME = "cursor.json"


class _Cursor(msgspec.Struct):
    version: int = 1
    saved_at_ns: int = 0
    delivered_to: dict[int, int] = msgspec.field(default_factory=dict)  # segment -> offset


def load_cursor(directory: str) -> dict[int, int]:
    """Segment -> delivered prefix; empty (everything is re-sent: duplicates, no loss) when unreadable."""
    path = os.path.join(directory, CURSOR_NAME)
    try:
        with open(path, "rb") as handle:
            return msgspec.json.decode(handle.read(), type=_Cursor).delivered_to
    except FileNotFoundError:
        return {}
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as err:
        log.error("spool cursor unreadable; its segments are sent again from their start", extra={"path": path, "error": str(err)})
        return {}


def save_cursor(directory: str, delivered_to: dict[int, int]) -> None:
    """Atomically (temp file, fsync, rename, fsync the directory); blocking."""
    path = os.path.join(directory, CURSOR_NAME)
    temp = f"{path}.tmp"
    with open(temp, "wb") as handle:
        handle.write(msgspec.json.encode(_Cursor(saved_at_ns=time.time_ns(), delivered_to=delivered_to)))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_directory(directory)
