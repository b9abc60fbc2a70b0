"""The spool's cursor file: each segment's delivered prefix and the records delivered beyond it, so
a restart re-sends at most what was delivered since the last checkpoint."""

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
    # segment -> {offset: end} of records delivered (or set aside) out of order beyond that offset;
    # few: the records ahead of one not yet delivered. Absent in cursors of earlier versions.
    ahead: dict[int, dict[int, int]] = msgspec.field(default_factory=dict)


class Cursor(msgspec.Struct):
    delivered_to: dict[int, int] = msgspec.field(default_factory=dict)
    ahead: dict[int, dict[int, int]] = msgspec.field(default_factory=dict)


def load_cursor(directory: str) -> Cursor:
    """What was delivered; empty (everything is re-sent: duplicates, no loss) when unreadable."""
    path = os.path.join(directory, CURSOR_NAME)
    try:
        with open(path, "rb") as handle:
            saved = msgspec.json.decode(handle.read(), type=_Cursor)
    except FileNotFoundError:
        return Cursor()
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as err:
        log.error("spool cursor unreadable; its segments are sent again from their start", extra={"path": path, "error": str(err)})
        return Cursor()
    return Cursor(saved.delivered_to, saved.ahead)


def save_cursor(directory: str, cursor: Cursor) -> None:
    """Atomically (temp file, fsync, rename, fsync the directory); blocking."""
    path = os.path.join(directory, CURSOR_NAME)
    temp = f"{path}.tmp"
    with open(temp, "wb") as handle:
        handle.write(msgspec.json.encode(_Cursor(saved_at_ns=time.time_ns(), delivered_to=cursor.delivered_to, ahead=cursor.ahead)))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_directory(directory)
