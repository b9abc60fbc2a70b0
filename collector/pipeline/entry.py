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
    """Where a file source resumes: the file's identity and the byte after the last delivered record."""

    inode: int
    offset: int


class StreamPosition(NamedTuple):
    """Where an Engine API stream resumes: the timestamp of the last delivered record and how many
    records with exactly that timestamp were delivered (`since` is inclusive, split lines share one)."""

    ts_ns: int
    count: int


Position = FilePosition | StreamPosition


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
