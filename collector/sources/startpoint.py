"""Where a container's new source starts reading: the one place that decides it.

Where an earlier source of it stopped in this run, else its acknowledged position; without either,
a first meeting (found running at the first start, not started since the last checkpoint) starts
at `positions.start_at`, anything else from its first byte.
"""

from __future__ import annotations

import logging
import os
import time

from collector.docker.containers import ContainerInfo, local_log_path
from collector.pipeline.entry import Position, StreamPosition
from collector.positions import PositionStore
from collector.sources.files import FileTailer
from collector.sources.routing import FILE_DRIVERS
from collector.sources.tracked import Tracked
from collector.timefmt import BadTimestamp, parse_timestamp

log = logging.getLogger(__name__)


class StartPoints:
    def __init__(self, positions: PositionStore, *, containers_dir: str, own_id: str | None, start_at: float | None,
                 files_usable: bool) -> None:
        self._positions = positions
        self._containers_dir = containers_dir
        self._own_id = own_id
        self._start_at = start_at  # first meeting: None = all, 0 = end, else a window in seconds
        self._files_usable = files_usable
        # Where each ended source stopped reading: a restart continues there even before its last
        # chunks are acknowledged (acknowledged positions can lag behind).
        self.read_upto: dict[str, Position] = {}

    def of(self, tracked: Tracked) -> tuple[Position | None, bool]:
        """Where a new source of this container starts, and whether that is its first meeting."""
        info = tracked.info
        position = self.read_upto.get(info.id) or self._positions.get(info.id)
        if position is not None:
            return position, False
        return None, tracked.found_at_startup and not self.started_since_checkpoint(info)

    def stream_start(self, tracked: Tracked) -> StreamPosition:
        position, first_meeting = self.of(tracked)
        if isinstance(position, StreamPosition):
            return position
        if position is not None:
            log.info("read through the API now, previously from its file: reading the stream from its start "
                     "(Loki drops exact repeats)", extra={"container_id": tracked.info.id[:12]})
        start_at = self._start_at
        if first_meeting and start_at is not None:
            return StreamPosition(time.time_ns() - int(start_at * 1e9), 0)
        return StreamPosition(0, 0)

    def started_since_checkpoint(self, info: ContainerInfo) -> bool:
        checkpoint = self._positions.previous_checkpoint_ns
        if not checkpoint or not info.started_at:
            return False
        try:
            return parse_timestamp(info.started_at) > checkpoint
        except BadTimestamp:
            return False

    def may_have_unread(self, info: ContainerInfo) -> bool:
        """A stopped container with bytes after its position, or one started since the last checkpoint."""
        if info.id == self._own_id or info.log_driver == "none":
            return False
        position = self._positions.get(info.id)
        if position is None:
            # Never read: new since the last checkpoint, or `start_at: all` asks for everything on disk.
            return self.started_since_checkpoint(info) or self._start_at is None
        if isinstance(position, StreamPosition) or info.log_driver not in FILE_DRIVERS or not self._files_usable:
            return True  # a short catch-up pass of the stream tells
        try:
            st = os.stat(local_log_path(self._containers_dir, info))
        except OSError:
            return False
        return st.st_ino != position.inode or st.st_size > position.offset

    def seek_first_meeting(self, tailer: FileTailer, info: ContainerInfo) -> None:
        start_at = self._start_at
        if start_at is None:
            return
        if start_at == 0:
            tailer.start_at_end()
            return
        cutoff_ns = time.time_ns() - int(start_at * 1e9)
        offset, size, bytes_read = tailer.start_at_time(cutoff_ns)
        log.info("first meeting: starting inside the start_at window",
                 extra={"container_id": info.id[:12], "offset": offset, "file_size": size, "bytes_read": bytes_read,
                        "path": os.path.basename(tailer.reading_name)})
