"""A container as the registry holds it: its info, lifecycle phase, source, task and counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from collector.docker.containers import ContainerInfo
from collector.sources.lifecycle import Phase
from collector.sources.routing import is_fallback
from collector.sources.source import Source, SourceStats
from collector.transform.labeling import Profile


@dataclass(slots=True)
class Tracked:
    info: ContainerInfo
    phase: Phase
    stats: SourceStats = field(default_factory=SourceStats)
    source: Source | None = None
    task: asyncio.Task[None] | None = None
    reason: str = ""  # why skipped, why it fell back to the stream, or why it cannot be read
    profile: Profile | None = None  # labels and settings, made at start and on rename
    read_as: str = ""  # the kind of its last source: its metrics keep one series after it stops
    destroyed: bool = False
    found_at_startup: bool = False  # met in the first listing, not through a start event
    faults: int = 0  # unexpected failures in a row (setup or source); see supervision.py
    fell_back: bool = False  # read through the stream because the other way kept failing

    @property
    def mode(self) -> str:
        """How it is read now: file, stream, skipped, stopped, failed, or resolving."""
        if self.source is not None:
            return self.source.kind
        return self.phase.value

    @property
    def mode_reason(self) -> str:
        """The reason shown beside the mode: why skipped or failed, or which fallback."""
        fallback = self.mode == "stream" and is_fallback(self.reason)
        return f"fallback: {self.reason}" if fallback else self.reason
