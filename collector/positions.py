"""Resume points per container, advanced only by acknowledged chunks, checkpointed atomically.

The file (JSON) holds, per container id, where its source resumes (a json-file log: the file's
inode and the offset after the last acknowledged record; an Engine API stream: the `since` to ask
for, how many of the records Docker sends from it on were acknowledged, and the newest record's
time), plus when it was written. Version 1 files (before the resume window) held a stream's newest
time and the records acknowledged at exactly it: the same pair read as (since, count), so they
load unchanged (`newest_ns` missing: 0, read as `ts_ns`). It is written with temp file + fsync + rename, then
the directory is fsynced (a crash leaves the old or the new file, never half of one), at most once
per sync interval and once more at shutdown. The writes go through aiofiles: an fsync can take
milliseconds.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterable

import aiofiles
import aiofiles.os
import msgspec

from collector.durable import fsync_directory
from collector.pipeline.entry import Chunk, FilePosition, Position, StreamPosition

log = logging.getLogger(__name__)

GONE_REMEMBERED = 4096  # destroyed container ids remembered against late acknowledgements


class PositionsLocked(Exception):
    """Another process holds the positions file."""


def lock_positions(path: str) -> int:
    """Hold `<path>.lock` until the process ends (the kernel releases it then, even after a crash):
    two collectors on one positions file would overwrite each other's checkpoints.
    Returns the open descriptor, which must stay open."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PositionsLocked(f"another collector holds {path}") from None
    return fd


class _Saved(msgspec.Struct):
    inode: int = 0
    offset: int = 0
    kind: str = "file"
    ts_ns: int = 0
    count: int = 0
    newest_ns: int = 0  # absent in version 1 files: then ts_ns
    fingerprint: int = 0  # of the file's first record: an inode alone is reused after Docker deletes a file

    @staticmethod
    def of(position: Position) -> _Saved:
        if isinstance(position, StreamPosition):
            return _Saved(kind="stream", ts_ns=position.ts_ns, count=position.count, newest_ns=position.newest_ns)
        return _Saved(position.inode, position.offset, fingerprint=position.fingerprint)

    def position(self) -> Position:
        if self.kind == "stream":
            return StreamPosition(self.ts_ns, self.count, self.newest_ns)
        return FilePosition(self.inode, self.offset, self.fingerprint)


class _File(msgspec.Struct):
    version: int = 2  # 2: stream positions resume a window early (sources/resume.py); 1 loads the same
    saved_at_ns: int = 0
    containers: dict[str, _Saved] = msgspec.field(default_factory=dict)


class PositionStore:
    def __init__(self, path: str, sync_interval: float) -> None:
        self.path = path
        self.sync_interval = sync_interval
        self._acked: dict[str, Position] = {}
        # Recently destroyed containers: ids are never reused, and late acks (chunks still in flight
        # when the container went) must not bring them back. Bounded: only in-flight chunks can
        # come late, and they belong to the last few removals, not to every removal ever.
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._saving = asyncio.Lock()  # one checkpoint write at a time (they share the temp file)
        self._dirty = asyncio.Event()
        self.previous_checkpoint_ns = 0  # when the file we resumed from was written; 0: first run
        self.last_write = 0.0  # monotonic time of the last checkpoint written
        self.writes = 0
        self.write_errors = 0

    # -- startup -----------------------------------------------------------------------------
    def load(self) -> None:
        """Read the checkpoint (blocking: once, before anything runs). A corrupt file is set aside."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return
        try:
            saved = msgspec.json.decode(raw, type=_File)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            aside = f"{self.path}.corrupt-{int(time.time())}"
            os.replace(self.path, aside)
            log.error("positions file unreadable; set aside, starting without positions", extra={"path": self.path, "moved_to": aside, "error": str(err)})
            return
        self._acked = {cid: p.position() for cid, p in saved.containers.items()}
        self.previous_checkpoint_ns = saved.saved_at_ns
        log.info("positions loaded", extra={"path": self.path, "containers": len(self._acked)})

    # -- reading and advancing ---------------------------------------------------------------
    def get(self, container_id: str) -> Position | None:
        return self._acked.get(container_id)

    def ensure(self, container_id: str, position: Position) -> None:
        """Record where a new source starts, so a crash before its first ack resumes there."""
        if container_id not in self._acked and container_id not in self._gone:
            self._acked[container_id] = position
            self._dirty.set()

    def acknowledge(self, chunks: Iterable[Chunk]) -> None:
        # Chunks of one container are acknowledged in read order, so the last one wins.
        for chunk in chunks:
            if chunk.position is not None:
                self.advance(chunk.origin.container_id, chunk.position)

    def advance(self, container_id: str, position: Position) -> None:
        """The container's chunks up to `position` are delivered or durable (in read order)."""
        if container_id not in self._gone:
            self._acked[container_id] = position
            self._dirty.set()

    def forget(self, container_id: str) -> None:
        self._gone[container_id] = None
        self._gone.move_to_end(container_id)
        while len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)
        if self._acked.pop(container_id, None) is not None:
            self._dirty.set()

    def retain(self, container_ids: set[str]) -> None:
        """Drop positions of containers that no longer exist."""
        for container_id in [cid for cid in self._acked if cid not in container_ids]:
            self.forget(container_id)

    def table_sizes(self) -> dict[str, int]:
        """Entries per table, for /status and the churn tests: positions follow the containers
        that exist; destroyed ids are remembered up to GONE_REMEMBERED."""
        return {"positions": len(self._acked), "gone": len(self._gone)}

    def checkpoint_age(self) -> float:
        return time.monotonic() - self.last_write if self.last_write else 0.0

    # -- writing -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Write after changes, at most once per sync interval."""
        while True:
            await self._dirty.wait()
            await self.save()
            await asyncio.sleep(self.sync_interval)

    async def save(self) -> None:
        async with self._saving:
            await self._save()

    async def _save(self) -> None:
        self._dirty.clear()
        payload = msgspec.json.encode(
            _File(
                saved_at_ns=time.time_ns(),
                containers={cid: _Saved.of(p) for cid, p in self._acked.items()},
            )
        )
        temp = f"{self.path}.tmp"
        try:
            await aiofiles.os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            async with aiofiles.open(temp, "wb") as handle:
                await handle.write(payload)
                await handle.flush()
                await asyncio.to_thread(os.fsync, handle.fileno())
            await aiofiles.os.replace(temp, self.path)
            await asyncio.to_thread(fsync_directory, os.path.dirname(self.path) or ".")
        except OSError as err:
            self.write_errors += 1
            self._dirty.set()  # try again next interval
            log.error("cannot write positions", extra={"path": self.path, "error": str(err)})
            return
        self.writes += 1
        self.last_write = time.monotonic()
