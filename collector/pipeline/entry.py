"""What flows from sources to sinks: chunks of entries, each chunk from one container.

One queue item per chunk, never per line: per-line Python work is what limits throughput.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Entry(NamedTuple):
    ts_ns: int
    line: str
    stream: str  # "stdout" or "stderr"
    attrs: dict[str, str] | None = None  # this entry's own structured metadata (e.g. fields from the line)


class FilePosition(NamedTuple):
    """Where a file source resumes: the file's identity (inode, and a fingerprint of its first record:
    0 while unknown) and the byte after the last delivered record (in a `.gz` file: of its content)."""

    inode: int
    offset: int
    fingerprint: int = 0


class StreamPosition(NamedTuple):
    """Where an Engine API stream resumes: the `since` to ask for, and how many of the records
    Docker sends from it on were delivered already (skipped by count, in Docker's order).

    `since` lies a window before the newest delivered record (`newest_ns`), so a record stamped up
    to that much earlier than one before it (stdout and stderr are stamped by separate goroutines;
    a clock can step back) is still sent again. Ordered as tuples, a later position is greater."""

    ts_ns: int
    count: int
    newest_ns: int = 0  # the newest delivered record's time; 0: `ts_ns` (positions saved before the window)

    @property
    def newest(self) -> int:
        return self.newest_ns or self.ts_ns


Position = FilePosition | StreamPosition


class SpoolMark(NamedTuple):
    """Where a chunk read back from a lane's spool lies: its delivery is acknowledged to that spool
    (its position was checkpointed when it became durable), never to the positions."""

    lane: str  # the tenant of the lane whose spool holds it ("" the default lane)
    segment: int
    offset: int
    end: int
    chain: str = ""  # "" the lane's shared segments; else the container whose own segments hold it (spool/lane.py)


@dataclass(eq=False, slots=True)
class Origin:
    """The container a chunk came from, as it was when the chunk was read (rename makes a new Origin)."""

    container_id: str
    labels: dict[str, str]  # without `stream`; the sink adds it per entry
    metadata: dict[str, str] = field(default_factory=dict)  # candidates for structured metadata
    tenant: str = ""  # Loki tenant (X-Scope-OrgID); "": the sink's default (loki.tenant)


@dataclass(eq=False, slots=True)
class Chunk:
    origin: Origin
    entries: list[Entry]
    nbytes: int  # raw bytes read for these entries: what the queue bound counts
    position: Position | None = None  # resume point after this chunk, advanced when acknowledged
    spooled: SpoolMark | None = None  # set on chunks read back from the spool
