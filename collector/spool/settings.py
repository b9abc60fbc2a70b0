"""A spool's settings and counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    path: str  # this lane's directory
    max_bytes: int
    segment_bytes: int
    headroom_bytes: int = 4 * 1024 * 1024  # left free on the volume for the positions file
    lane: str = ""  # the tenant of the lane ("" the default lane): read-back chunks' marks name it
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
