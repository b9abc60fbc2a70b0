"""The registry's counters summed for /status and /metrics: totals that never go back, the
containers that cannot be read, and what a shutdown loses of a removed container."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from collector.sources.lifecycle import Phase
from collector.sources.source import SourceStats
from collector.sources.tracked import Tracked

log = logging.getLogger(__name__)

_COUNTERS = ("lines", "bytes", "errors", "truncated", "rotations", "truncations", "reconnects", "gaps", "lost_events", "lost_bytes",
             "files_lost")


def add_stats(into: SourceStats, stats: SourceStats) -> None:
    for name in _COUNTERS:
        setattr(into, name, getattr(into, name) + getattr(stats, name))
    into.losses.update(stats.losses)


def totals(retired: SourceStats, containers: Iterable[Tracked]) -> SourceStats:
    total = SourceStats()
    add_stats(total, retired)
    for tracked in containers:
        add_stats(total, tracked.stats)
    return total


def unreadable(containers: Iterable[Tracked]) -> list[str]:
    """Containers that can be read neither from their file nor through the API."""
    return [f"container {t.info.name or t.info.id[:12]} cannot be read: {t.reason}"
            for t in containers if t.phase is Phase.FAILED]


def count_abandoned(tracked: Tracked) -> int:
    """Shutdown cancels a destroyed container's source: what it had not read is gone for good.
    Counted on the container; returns the bytes lost (for the registry's `lost_bytes`)."""
    if not tracked.destroyed or tracked.source is None:
        return 0
    unread = tracked.source.unread_bytes()
    tracked.stats.lose("shutdown_after_destroy")
    if unread:
        tracked.stats.lost_bytes += unread
    log.warning("shutdown cancels the source of a removed container; its unread log is lost",
                extra={"container_id": tracked.info.id[:12], "unread_bytes": unread})
    return unread
