"""A spool's settings and counters, and where its reader sends a record."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Route(enum.Enum):
    """What a spool's reader does with a record it read back (Spool._route)."""

    HAND = 1  # to the queue
    ASIDE = 2  # copied elsewhere (lane.py); resolved here once that copy is durable
    WAIT = 3  # neither yet: the reader stops before it until something changes


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    path: str  # this lane's directory
    max_bytes: int
    segment_bytes: int
    headroom_bytes: int = 4 * 1024 * 1024  # left free on the volume for the positions file
    max_pending_bytes: int = 1 * 1024 * 1024  # appended, not yet written: sources wait beyond (a slow disk)
    lane: str = ""  # the tenant of the lane ("" the default lane): read-back chunks' marks name it
    chain: str = ""  # "" the lane's shared segments; else the container whose records were set aside here
    checkpoint_interval: float = 1.0
    retry_interval: float = 1.0


@dataclass(slots=True)
class SpoolStats:
    writes: int = 0  # records made durable
    reads: int = 0  # records read back
    corrupt_records: int = 0  # regions that failed their check (and unreadable segments)
    skipped_bytes: int = 0
    torn_records: int = 0  # incomplete last records after a crash: never durable, never acknowledged
    write_errors: int = 0
    forwarded_records: int = 0  # records of a held container moved from shared segments to its own (lane.py)
    forwarded_bytes: int = 0
