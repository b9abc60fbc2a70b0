"""One source per container: routing by log driver, and the lifecycle start -> die -> destroy.

The registry owns every source task (one TaskGroup); nothing it starts outlives it or its container.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass

from collector.docker.containers import ContainerInfo, local_log_path
from collector.pipeline.entry import FilePosition, Origin
from collector.pipeline.queue import ChunkQueue
from collector.positions import PositionStore
from collector.sources.files import FileTailer, InotifyHub, TailerSettings
from collector.sources.jsonfile import BadTimestamp, JsonFileParser, parse_timestamp
from collector.sources.seek import end_offset, offset_for_time
from collector.sources.source import Source, SourceStats

log = logging.getLogger(__name__)

FILE_DRIVERS = frozenset({"json-file"})


@dataclass(slots=True)
class Tracked:
    info: ContainerInfo
    source: Source | None = None
    task: asyncio.Task[None] | None = None
    mode: str = "file"  # file | stream | skipped | stopped
    skip_reason: str = ""
    stats: SourceStats | None = None


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


class SourceRegistry:
    def __init__(
        self,
        *,
        queue: ChunkQueue,
        hub: InotifyHub,
        containers_dir: str,
        settings: TailerSettings,
        max_line_bytes: int,
        static_labels: dict[str, str],
        host_label: bool,
        drain_timeout: float,
        own_id: str | None,
        positions: PositionStore,
        start_at: float | None,
    ) -> None:
        self._queue = queue
        self._hub = hub
        self._containers_dir = containers_dir
        self._settings = settings
        self._max_line_bytes = max_line_bytes
        self._static_labels = static_labels
        self._host_label = host_label
        self._drain_timeout = drain_timeout
        self._own_id = own_id
        self._positions = positions
        self._start_at = start_at  # first meeting: None = all, 0 = end, else a window in seconds
        self.host = ""
        self.containers: dict[str, Tracked] = {}
        # Where each finished source stopped reading: a restart continues there even before
        # its last chunks are acknowledged (acknowledged positions can lag behind).
        self._read_upto: dict[str, FilePosition] = {}
        # Per container until destroy, across restarts: counters never go backwards.
        self._stats: dict[str, SourceStats] = {}
        # Destroyed containers whose source still drains: owned here until it ends.
        self._finishing: dict[str, Tracked] = {}
        self.skipped = Counter[str]()
        self.first_reconcile_done = False
        self._group: asyncio.TaskGroup | None = None
        self.running = asyncio.Event()  # set once sources can be started
        self._stopping = asyncio.Event()

    # -- ownership ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Hold the task group that owns every source task until stop()."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self.running.set()
            await self._stopping.wait()
            # Cancel every source, the draining ones too: they may wait on a full queue, which is
            # only closed (and drained by the sink) after this group has ended.
            for tracked in [*self.containers.values(), *self._finishing.values()]:
                if tracked.task is not None:
                    tracked.task.cancel()
        self._group = None

    def stop(self) -> None:
        self._stopping.set()

    # -- discovery callbacks -----------------------------------------------------------------
    def set_host(self, name: str) -> None:
        self.host = name

    async def reconcile(self, present: list[ContainerInfo]) -> None:
        """After (re)connecting: start what runs, catch up what stopped meanwhile, forget what is gone."""
        present_ids = {info.id for info in present}
        for container_id in [cid for cid in self.containers if cid not in present_ids]:
            await self.destroyed(container_id)
        self._positions.retain(present_ids)
        for info in present:
            if info.running:
                await self.started(info)
            elif self._has_unread(info):
                await self.started(info, catch_up=True)
            else:
                self.containers.setdefault(info.id, Tracked(info, mode="stopped"))
        self.first_reconcile_done = True

    def _has_unread(self, info: ContainerInfo) -> bool:
        """A stopped container with bytes after its position, or one started since the last checkpoint."""
        if info.log_driver not in FILE_DRIVERS or info.id == self._own_id:
            return False
        position = self._positions.get(info.id)
        if position is None:
            return self._started_since_checkpoint(info)
        try:
            st = os.stat(local_log_path(self._containers_dir, info))
        except OSError:
            return False
        return st.st_ino != position.inode or st.st_size > position.offset

    def _started_since_checkpoint(self, info: ContainerInfo) -> bool:
        checkpoint = self._positions.previous_checkpoint_ns
        if not checkpoint or not info.started_at:
            return False
        try:
            return parse_timestamp(info.started_at) > checkpoint
        except BadTimestamp:
            return False

    def preopen(self, container_id: str) -> int | None:
        """Open a starting container's json-file log by its conventional path, before the inspect
        round-trip: a `--rm` container's log may be unlinked a few hundred ms after it starts."""
        if container_id == self._own_id:
            return None
        try:
            return os.open(
                os.path.join(self._containers_dir, container_id, f"{container_id}-json.log"),
                os.O_RDONLY | os.O_CLOEXEC,
            )
        except OSError:
            return None  # another driver, or gone already

    async def started(self, info: ContainerInfo, catch_up: bool = False, preopened_fd: int | None = None) -> None:
        """Route a running (or, with catch_up, stopped) container to its source.
        A pre-opened fd goes to the new file source, or is closed here."""
        tracked = self.containers.get(info.id)
        if tracked is not None and tracked.task is not None and not tracked.task.done():
            if tracked.source is None or not tracked.source.draining:
                _close(preopened_fd)
                return  # already following it (a re-list after reconnect)
            await self._finish(tracked)  # restarted while draining: finish the old run first
        if info.id == self._own_id:
            self._skip(info, "self")
        elif info.log_driver == "none":
            self._skip(info, "driver_none")
        elif info.log_driver not in FILE_DRIVERS:
            # Engine API streaming for other drivers comes with the stream source.
            self._skip(info, f"driver_{info.log_driver}")
        else:
            self._start_file(info, catch_up, preopened_fd)
            return
        _close(preopened_fd)

    def died(self, container_id: str) -> None:
        tracked = self.containers.get(container_id)
        if tracked is None:
            return
        tracked.info.running = False
        if tracked.source is not None:
            tracked.source.drain()

    async def destroyed(self, container_id: str) -> None:
        """Forget the container; a source still draining finishes in its own task, so the event
        stream is never held up (the next container's start must be handled at once)."""
        tracked = self.containers.pop(container_id, None)
        self._read_upto.pop(container_id, None)
        self._stats.pop(container_id, None)
        self._positions.forget(container_id)
        if tracked is not None and tracked.task is not None and not tracked.task.done():
            assert tracked.source is not None and self._group is not None
            tracked.source.drain()
            self._finishing[container_id] = tracked
            self._group.create_task(self._finish_destroyed(container_id, tracked), name=f"finish:{container_id[:12]}")

    async def _finish_destroyed(self, container_id: str, tracked: Tracked) -> None:
        try:
            await self._finish(tracked)
        finally:
            self._finishing.pop(container_id, None)

    def renamed(self, container_id: str, new_name: str) -> None:
        tracked = self.containers.get(container_id)
        if tracked is None:
            return
        tracked.info.name = new_name
        if tracked.source is not None:
            tracked.source.origin = self._origin(tracked.info)

    # -- internals ---------------------------------------------------------------------------
    def _skip(self, info: ContainerInfo, reason: str) -> None:
        if info.id not in self.containers or self.containers[info.id].mode != "skipped":
            self.skipped[reason] += 1
            log.info("container skipped", extra={"container_id": info.id[:12], "container_name": info.name, "reason": reason})
        self.containers[info.id] = Tracked(info, mode="skipped", skip_reason=reason)

    def _origin(self, info: ContainerInfo) -> Origin:
        labels = {
            "container_name": info.name,
            "compose_project": info.compose_project,
            "compose_service": info.compose_service,
        }
        if self._host_label and self.host:
            labels["host"] = self.host
        labels.update(self._static_labels)
        return Origin(
            container_id=info.id,
            labels={key: value for key, value in labels.items() if value},
            metadata={"container_id": info.id, "image": info.image},
        )

    def _start_file(self, info: ContainerInfo, catch_up: bool, preopened_fd: int | None = None) -> None:
        assert self._group is not None, "registry is not running"
        path = local_log_path(self._containers_dir, info)
        position = self._read_upto.get(info.id) or self._positions.get(info.id)
        first_meeting = position is None and self._first_meeting(info)
        stats = self._stats.setdefault(info.id, SourceStats())
        try:
            tailer = FileTailer(
                path,
                self._origin(info),
                self._queue,
                self._hub,
                self._settings,
                JsonFileParser(self._max_line_bytes),
                position,
                stats,
                preopened_fd,
                # Read from its first byte: begin at the oldest rotated file still there.
                from_oldest=not first_meeting or self._start_at is None,
            )
        except OSError as err:
            log.error("cannot open container log", extra={"container_id": info.id[:12], "path": path, "error": str(err)})
            stats.errors += 1
            stats.last_error = f"open failed: {err.strerror}"
            self.containers[info.id] = Tracked(info, mode="file", skip_reason=stats.last_error, stats=stats)
            return
        if first_meeting:
            self._seek_first_meeting(tailer, info)
        self._positions.ensure(info.id, tailer.queued_position)
        if catch_up or not info.running:
            tailer.drain()  # read to the end, then close: it is not running
        task = self._group.create_task(self._run_source(info.id, tailer), name=f"file:{info.id[:12]}")
        self.containers[info.id] = Tracked(info, tailer, task, mode=tailer.kind, stats=stats)

    def _first_meeting(self, info: ContainerInfo) -> bool:
        """Found already running at the first start (no checkpoint, or it predates the checkpoint).
        Containers that start while the collector runs, or started while it was down, are read whole."""
        return not self.first_reconcile_done and not self._started_since_checkpoint(info)

    def _seek_first_meeting(self, tailer: FileTailer, info: ContainerInfo) -> None:
        size = os.fstat(tailer.fd).st_size
        if self._start_at is None:
            return
        if self._start_at == 0:
            tailer.seek_to(end_offset(tailer.fd, size))
            return
        cutoff_ns = time.time_ns() - int(self._start_at * 1e9)
        offset, bytes_read = offset_for_time(tailer.fd, size, cutoff_ns)
        tailer.seek_to(offset)
        log.info("first meeting: starting inside the start_at window",
                 extra={"container_id": info.id[:12], "offset": offset, "file_size": size, "bytes_read": bytes_read})

    async def _run_source(self, container_id: str, source: FileTailer) -> None:
        """A source's failure is logged and counted; it never takes the collector down."""
        try:
            await source.run()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - isolate one container's fault from the rest
            source.stats.errors += 1
            source.stats.last_error = repr(err)
            log.exception("source failed", extra={"container_id": container_id[:12]})
        finally:
            if container_id in self.containers:  # not destroyed meanwhile
                self._read_upto[container_id] = source.queued_position

    async def _finish(self, tracked: Tracked) -> None:
        """Let a draining source end by itself within the drain timeout, else cancel it."""
        task = tracked.task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(self._drain_timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
