"""What every source is to the registry, whatever it reads from (a json-file log, or the Engine API)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from collector.pipeline.entry import Origin, Position

if TYPE_CHECKING:
    from collector.transform.lines import LineProcessor
    from collector.transform.multiline import Joiner
    from collector.transform.routing import StreamLabeler


@dataclass(slots=True)
class SourceStats:
    """Per container until it is destroyed, across restarts and mode changes: counters never go back."""

    lines: int = 0
    bytes: int = 0
    errors: int = 0
    truncated: int = 0
    rotations: int = 0
    truncations: int = 0
    reconnects: int = 0  # stream sources: connections ended and opened again
    gaps: int = 0  # stream sources: Docker no longer had the records after the saved position
    lost_events: int = 0  # reads that ended with data left behind (removed before read, stalled drain)
    losses: Counter[str] = field(default_factory=Counter)  # lost_events by reason (see lose())
    lost_bytes: int = 0  # of those, the bytes known to be unread
    files_lost: int = 0  # rotated json-file logs Docker deleted before they were read
    last_entry_ns: int = 0  # Docker's timestamp of the newest entry queued
    last_error: str = ""

    def lose(self, reason: str, events: int = 1) -> None:
        """Count a loss (collector_source_losses_total{reason}); the caller logs it."""
        self.lost_events += events
        self.losses[reason] += events


class Source(Protocol):
    """One container's reader. The registry drives it through one lifecycle:
    run (start) -> drain (die/destroy) -> [resume (started again)] -> run returns; cancel on shutdown."""

    kind: str  # "file" or "stream"
    processor: LineProcessor | None  # per-line rules applied before queueing
    joiner: Joiner | None  # multiline joining, before the per-line rules
    labeler: StreamLabeler | None  # the stream each entry goes to: labels from fields, cardinality guard
    origin: Origin  # replaced on rename: later chunks carry the new labels
    stats: SourceStats
    draining: bool

    @property
    def queued_position(self) -> Position:
        """Where a new reader of this container continues if this one ends now."""

    async def run(self) -> None:
        """Read until drained or cancelled; release every handle on the way out."""

    def join_lines(self, joiner: Joiner) -> None:
        """Join continuation lines (stack traces) into one entry from now on."""

    def drain(self) -> None:
        """The container died: deliver what is left, then let run() return."""

    def resume(self) -> None:
        """The container started again while this source drained: keep reading."""

    def close(self) -> None:
        """Release handles now (idempotent); for a source whose task never ran."""

    def snapshot(self) -> dict[str, object]:
        """What /status shows of this source beyond its stats."""
