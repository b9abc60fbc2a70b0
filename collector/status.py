"""/status: built from what the registry, its sources, the positions, the queue and the sink expose."""

from __future__ import annotations

import os
import time
from typing import Any

from collector.pipeline.entry import FilePosition, StreamPosition
from collector.pipeline.inflight import InFlight
from collector.positions import PositionStore
from collector.sinks.loki import PushStats
from collector.sources.apistream import since_param
from collector.sources.registry import SourceRegistry, Tracked


def container_state(tracked: Tracked, in_flight: bool) -> str:
    """The container as an operator sees it: running, exited, destroyed-draining (its source still
    reads, or the sink still holds its lines) or destroyed."""
    if tracked.destroyed:
        reading = tracked.task is not None and not tracked.task.done()
        return "destroyed-draining" if reading or in_flight else "destroyed"
    return "running" if tracked.info.running else "exited"


def container_row(tracked: Tracked, positions: PositionStore, inflight: InFlight, now_ns: int) -> dict[str, Any]:
    info, stats, source = tracked.info, tracked.stats, tracked.source
    unacked = inflight.unacknowledged_bytes(info.id)
    row: dict[str, Any] = {
        "id": info.id,
        "name": info.name,
        "state": container_state(tracked, unacked > 0),
        "phase": tracked.phase.value,
        "mode": tracked.mode,
        "reason": tracked.mode_reason,
        "log_driver": info.log_driver,
        # Read and queued, not yet acknowledged by the sink; the lag is the age of the oldest such line.
        "unacked_bytes": unacked,
        "delivery_lag_seconds": round(inflight.delivery_lag(info.id, now_ns), 3),
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
    if isinstance(acked, FilePosition) and "path" in row:
        try:
            size: int | None = os.stat(row["path"]).st_size
        except OSError:
            size = None
        acked_offset = acked.offset if acked.inode == row.get("inode") else 0
        # On disk and not acknowledged: read or not yet read (the live file only).
        lag_bytes = max(0, (size or 0) - acked_offset) if size is not None else 0
        row.update(acked_offset=acked_offset, size=size, lag_bytes=lag_bytes)
    elif isinstance(acked, StreamPosition):
        row.update(acked_since=since_param(acked))
    return row


def removed_row(container_id: str, name: str, inflight: InFlight, now_ns: int) -> dict[str, Any]:
    """A container no longer tracked (destroyed, read to its end) whose lines the sink still holds."""
    return {
        "id": container_id, "name": name, "state": "destroyed-draining", "phase": "read", "mode": "-", "reason": "",
        "log_driver": "", "unacked_bytes": inflight.unacknowledged_bytes(container_id),
        "delivery_lag_seconds": round(inflight.delivery_lag(container_id, now_ns), 3),
        "lines": 0, "bytes": 0, "errors": 0, "reconnects": 0, "last_error": "",
    }


def build_status(registry: SourceRegistry, positions: PositionStore, inflight: InFlight, queue_bytes: int,
                 push: PushStats | None, docker_connected: bool,
                 throttled: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    now_ns = time.time_ns()
    rows = [container_row(tracked, positions, inflight, now_ns) for tracked in registry.containers.values()]
    rows += [removed_row(container_id, name, inflight, now_ns)
             for container_id, name in inflight.containers().items() if container_id not in registry.containers]
    rows.sort(key=lambda row: row["name"])
    return {
        "host": registry.host,
        "docker_connected": docker_connected,
        "files_readable": registry.files_usable,
        "files_problem": registry.files_problem,
        "queue_bytes": queue_bytes,
        "sink": "loki" if push is not None else "stdout",
        "last_push_ok": push.last_push_ok if push else True,
        "containers": rows,
        # Streams Loki throttles, paced at the rate it allows: which containers, since when, how fast.
        "throttled_streams": throttled or [],
    }
