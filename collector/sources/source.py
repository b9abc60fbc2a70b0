"""What every source is to the supervisor, whatever it reads from (a file now, the Engine API later)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from collector.pipeline.entry import Origin


@dataclass(slots=True)
class SourceStats:
    lines: int = 0
    bytes: int = 0
    errors: int = 0
    truncated: int = 0
    rotations: int = 0
    truncations: int = 0
    last_entry_ns: int = 0  # Docker's timestamp of the newest entry queued
    last_error: str = ""


class Source(Protocol):
    kind: str  # "file" or "stream"
    origin: Origin  # replaced on rename: later chunks carry the new labels
    stats: SourceStats
    draining: bool

    async def run(self) -> None:
        """Read until drained or cancelled; release every handle on the way out."""

    def drain(self) -> None:
        """The container died: deliver what is left, then let run() return."""

    def close(self) -> None:
        """Release handles now (idempotent); for a source whose task never ran."""
