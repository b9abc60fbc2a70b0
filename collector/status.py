"""/status: built from what the registry, its sources, the positions, the queue and the sink expose."""

from __future__ import annotations

import os
import time
from typing import Any

from collector.pipeline.entry import FilePosition, StreamPosition
from collector.pipeline.queue import ChunkQueue
from collector.positions import PositionStore
from collector.sinks.loki import PushStats
from collector.sources.apistream import since_param
from collector.sources.registry import SourceRegistry, Tracked


def mode_text(tracked: Tracked) -> tuple[str, str]:
    """How a container is read, and the reason shown beside it."""
    mode = tracked.mode
    if mode == "stream" and tracked.reason:
        return mode, f"fallback: {tracked.reason}"
    return mode, tracked.reason


def container_row(tracked: Tracked, positions: PositionStore, now_ns: int) -> dict[str, Any]:
    info, stats, source = tracked.info, tracked.stats, tracked.source
    mode, reason = mode_text(tracked)
    row: dict[str, Any] = {
        "id": info.id,
        "name": info.name,
        "mode": mode,
        "state": tracked.phase.value,
        "running": info.running,
        "log_driver": info.log_driver,
        "skip_reason": reason,
        "lines": stats.lines,
        "bytes": stats.bytes,
        "errors": stats.errors,
        "reconnects": stats.reconnects,
        "last_error": stats.last_error,
    }
    if source is None:
        return row
    row.update(source.snapshot())
    acked = positions.get(info.id)
    last_ns = stats.last_entry_ns
    if isinstance(acked, FilePosition) and "path" in row:
        try:
            size: int | None = os.stat(row["path"]).st_size
        except OSError:
            size = None
        acked_offset = acked.offset if acked.inode == row.get("inode") else 0
        lag_bytes = max(0, (size or 0) - acked_offset) if size is not None else 0
        row.update(acked_offset=acked_offset, size=size, lag_bytes=lag_bytes,
                   lag_seconds=round((now_ns - last_ns) / 1e9, 3) if lag_bytes and last_ns else 0.0)
    elif isinstance(acked, StreamPosition):
        row.update(acked_since=since_param(acked))
    return row


def build_status(registry: SourceRegistry, positions: PositionStore, queue: ChunkQueue, push: PushStats | None,
                 docker_connected: bool) -> dict[str, Any]:
    now_ns = time.time_ns()
    rows = [container_row(tracked, positions, now_ns)
            for tracked in sorted(registry.containers.values(), key=lambda t: t.info.name)]
    return {
        "host": registry.host,
        "docker_connected": docker_connected,
        "files_readable": registry.files_usable,
        "files_problem": registry.files_problem,
        "queue_bytes": queue.nbytes,
        "sink": "loki" if push is not None else "stdout",
        "last_push_ok": push.last_push_ok if push else True,
        "containers": rows,
    }
