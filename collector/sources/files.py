"""json-file sources: one inotify instance for the process, one tailer task per log file.

Linux allows 128 inotify instances per user by default, so the process has exactly one, with one
watch per container directory; its events only wake the tailers that own files there. A slow
safety poll covers a missed event. Tailers hold their file open from the moment they are made,
so a `--rm` container's log (unlinked ~0.3 s after it starts) is still read to its end.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from asyncinotify import Inotify, Mask

from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin
from collector.pipeline.queue import ChunkQueue
from collector.sources.jsonfile import JsonFileParser
from collector.sources.source import SourceStats
from collector.transform.lines import LineProcessor

log = logging.getLogger(__name__)

_DIR_MASK = (
    Mask.MODIFY | Mask.CREATE | Mask.MOVED_TO | Mask.MOVED_FROM | Mask.DELETE | Mask.DELETE_SELF | Mask.CLOSE_WRITE
)
# Docker's max-file is rarely above a handful; rotated files past this are not looked for.
_MAX_ROTATED = 9
# A record longer than this without a newline is not json-file output: drop it rather than grow.
_MAX_RECORD_BYTES = 8 * 1024 * 1024


_STRUCTURE = Mask.CREATE | Mask.MOVED_TO | Mask.MOVED_FROM | Mask.DELETE | Mask.DELETE_SELF | Mask.IGNORED


class Wakeup(asyncio.Event):
    """Set when a watched directory changes; `structure` says files were created, moved or removed
    (a rotation may have happened), as opposed to plain writes."""

    def __init__(self) -> None:
        super().__init__()
        self.structure = True  # look once at the start

    def set_structure(self) -> None:
        self.structure = True
        self.set()


class InotifyHub:
    """The process's single inotify instance; wakes the tailers watching a directory."""

    def __init__(self) -> None:
        self._inotify = Inotify()
        self._waiters: dict[str, set[Wakeup]] = {}
        self._watches: dict[str, object] = {}

    @property
    def watch_count(self) -> int:
        return len(self._watches)

    def subscribe(self, directory: str) -> Wakeup:
        wake = Wakeup()
        if directory not in self._watches:
            try:
                self._watches[directory] = self._inotify.add_watch(directory, _DIR_MASK)
            except OSError as err:
                # No watch (e.g. a --rm container's directory is gone already, its log held open):
                # the tailer still runs on its safety poll.
                log.debug("inotify watch failed", extra={"directory": directory, "error": str(err)})
        self._waiters.setdefault(directory, set()).add(wake)
        return wake

    def unsubscribe(self, directory: str, wake: Wakeup) -> None:
        waiters = self._waiters.get(directory)
        if waiters is None:
            return
        waiters.discard(wake)
        if waiters:
            return
        del self._waiters[directory]
        watch = self._watches.pop(directory, None)
        if watch is not None:
            try:
                self._inotify.rm_watch(watch)  # type: ignore[arg-type]
            except OSError:
                pass  # the directory is gone and the kernel dropped the watch already

    async def run(self) -> None:
        async for event in self._inotify:
            watch = event.watch
            if watch is None:
                continue
            directory = str(watch.path)
            if Mask.IGNORED in event.mask:
                self._watches.pop(directory, None)
            structural = bool(event.mask & _STRUCTURE)
            for wake in self._waiters.get(directory, ()):
                if structural:
                    wake.set_structure()
                else:
                    wake.set()

    def close(self) -> None:
        self._inotify.close()


@dataclass(slots=True)
class TailerSettings:
    read_chunk_bytes: int
    poll_interval: float
    drain_quiet: float = 0.2  # after `die`, EOF must stay quiet this long before the file is closed


class FileTailer:
    """Reads one container's json-file log from a position to wherever the container leaves it.

    Rotation: Docker renames <id>-json.log to .1 and opens a new file; the tailer finishes the old
    file through its open handle, then opens the new one. Truncation: starts again from 0.
    """

    kind = "file"
    processor: LineProcessor | None = None  # per-line rules, set by the registry

    def __init__(
        self,
        path: str,
        origin: Origin,
        queue: ChunkQueue,
        hub: InotifyHub,
        settings: TailerSettings,
        parser: JsonFileParser,
        position: FilePosition | None,
        stats: SourceStats,
        preopened_fd: int | None = None,
        from_oldest: bool = False,
    ) -> None:
        self.path = path
        self.origin = origin
        self._queue = queue
        self._hub = hub
        self._settings = settings
        self._parser = parser
        self.stats = stats
        self.draining = False
        self._directory = os.path.dirname(path)
        self._wake = hub.subscribe(self._directory)
        self._fd = -1
        self.inode = 0
        self.offset = 0
        try:
            self._open(position, preopened_fd, from_oldest)
        except BaseException:
            self.close()  # _open closed whatever it opened; this drops the inotify subscription
            raise

    def _open(self, position: FilePosition | None, preopened_fd: int | None, from_oldest: bool) -> None:
        """Open at once (not in the task): the handle must exist before the file can be unlinked.

        `preopened_fd` is the live file, opened when the start event arrived (before inspect); it
        is owned from here on. A saved position whose inode is no longer the live file is looked
        for among the rotated files (<name>.1, .2, ...): the rest of that file is read first.
        `from_oldest` (no position): start at the oldest rotated file still there, since a fast
        writer may have rotated before the start event reached us.
        """
        live_fd = preopened_fd
        try:
            if position is None and from_oldest:
                for name in reversed(self._chain()[1:]):
                    try:
                        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        continue
                    if live_fd is not None:
                        os.close(live_fd)
                    self._fd, self.inode = fd, os.fstat(fd).st_ino
                    self.seek_to(0)
                    return
            if position is not None:
                for name in self._chain():
                    if name == self.path and live_fd is not None:
                        fd = live_fd
                    else:
                        try:
                            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
                        except FileNotFoundError:
                            continue
                    st = os.fstat(fd)
                    if st.st_ino == position.inode and position.offset <= st.st_size:
                        if live_fd is not None and fd != live_fd:
                            os.close(live_fd)
                        self._fd, self.inode = fd, st.st_ino
                        self.seek_to(position.offset)
                        return
                    if fd != live_fd:
                        os.close(fd)
                # The saved file is gone (rotated away, or compressed): read the live file from its start.
            if live_fd is None:
                live_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            if live_fd is not None:
                os.close(live_fd)
            raise
        self._fd, self.inode = live_fd, os.fstat(live_fd).st_ino
        self.seek_to(0)

    def _chain(self) -> list[str]:
        """The live file, then Docker's rotated ones, newest first."""
        return [self.path] + [f"{self.path}.{index}" for index in range(1, _MAX_ROTATED + 1)]

    def seek_to(self, offset: int) -> None:
        """Read on from `offset`, a record boundary."""
        self.offset = offset
        os.lseek(self._fd, offset, os.SEEK_SET)
        self.queued_position = FilePosition(self.inode, offset)

    @property
    def fd(self) -> int:
        return self._fd

    def drain(self) -> None:
        """The container died: read to the end, deliver unfinished lines, then stop."""
        self.draining = True
        self._wake.set()

    def resume(self) -> None:
        """Started again (a restart keeps the id and appends to the same file): keep following."""
        self.draining = False

    def unread_bytes(self) -> int | None:
        if self._fd < 0:
            return None
        return max(0, os.fstat(self._fd).st_size - self.offset)

    def snapshot(self) -> dict[str, object]:
        return {"path": self.path, "inode": self.inode, "read_offset": self.offset}

    async def run(self) -> None:
        try:
            await self._follow()
        finally:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._hub.unsubscribe(self._directory, self._wake)

    async def _follow(self) -> None:
        rest = b""
        quiet_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            # Clear before reading: a write that lands during the read sets it again.
            self._wake.clear()
            data = os.read(self._fd, self._settings.read_chunk_bytes)
            if data:
                quiet_since = None
                rest = await self._consume(rest + data if rest else data)
                continue
            # At EOF of the file we hold. Rotation or truncation is looked for only when the
            # directory's files changed or the safety poll fired: plain writes cost no stat calls.
            if await self._truncated(rest) or self._wake.structure and await self._rotated(rest):
                rest = b""
                continue
            self._wake.structure = False
            if self.draining:
                now = loop.time()
                quiet_since = quiet_since or now
                if now - quiet_since >= self._settings.drain_quiet:
                    await self._finish(rest)
                    return
                timeout = self._settings.drain_quiet
            else:
                timeout = self._settings.poll_interval
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                self._wake.structure = True  # a missed event must not stall us: look again

    async def _consume(self, data: bytes) -> bytes:
        """Parse the whole records in `data`, queue them, return the unfinished tail."""
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > _MAX_RECORD_BYTES:
                self.stats.errors += 1
                self.stats.last_error = f"record over {_MAX_RECORD_BYTES} bytes without newline dropped"
                log.warning("oversized record dropped", extra={"container_id": self.origin.container_id, "path": self.path})
                self.offset += len(data)
                return b""
            return data
        whole = data[:cut]
        start = self.offset
        parsed = self._parser.stats
        bad_before, truncated_before = parsed.bad_records, parsed.truncated_lines
        entries, resume = self._parser.feed(whole, start)
        self.offset = start + cut
        self.stats.bytes += cut
        if parsed.bad_records != bad_before:
            self.stats.errors += parsed.bad_records - bad_before
            self.stats.last_error = parsed.last_error
            log.warning("bad json-file records skipped", extra={"container_id": self.origin.container_id[:12], "count": parsed.bad_records - bad_before, "error": parsed.last_error})
        self.stats.truncated += parsed.truncated_lines - truncated_before
        await self._put(entries, cut, resume)
        return data[cut:]

    async def _put(self, entries: list[Entry], nbytes: int, resume: int) -> None:
        # Counted here, not where records are parsed: a final line without newline comes from the
        # parser's flush at EOF, truncation or rotation.
        self.stats.lines += len(entries)
        position = FilePosition(self.inode, resume)
        if self.processor is not None:
            entries = self.processor.process(entries)  # dropped lines still move the position
        await self._queue.put(Chunk(self.origin, entries, nbytes, position))
        if entries:
            self.stats.last_entry_ns = entries[-1].ts_ns
        # Where a new run of this container continues if this one ends now.
        self.queued_position = position

    async def _finish(self, rest: bytes) -> None:
        if rest:
            # A trailing record without newline: Docker always ends records with one, so it is torn.
            self.stats.errors += 1
            self.stats.last_error = "torn record at end of file"
        entries = self._parser.flush()
        await self._put(entries, 0, self.offset)

    async def _truncated(self, rest: bytes) -> bool:
        """At EOF: the file is shorter than what we read (truncate -s0): start again from 0."""
        if os.fstat(self._fd).st_size >= self.offset:
            return False
        log.warning("log file truncated, reading from its start", extra={"path": self.path})
        self.stats.truncations += 1
        await self._finish(rest)
        self.seek_to(0)
        return True

    async def _rotated(self, rest: bytes) -> bool:
        """At EOF, after the directory changed: if our file was rotated, move to the next one.

        Our handle holds a renamed file; the next to read is the one renamed right after it
        (<name>.k-1), which is the live file unless several rotations passed meanwhile.
        """
        try:
            if os.stat(self.path).st_ino == self.inode:
                return False
        except FileNotFoundError:
            return False  # removed (destroy) or mid-rotation: keep our handle, the poll looks again
        chain = self._chain()
        successor = self.path
        for index, name in enumerate(chain[1:], start=1):
            try:
                if os.stat(name).st_ino == self.inode:
                    successor = chain[index - 1]
                    break
            except FileNotFoundError:
                continue
        try:
            fd = os.open(successor, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        # Our file is complete: its unfinished lines end here.
        self.stats.rotations += 1
        if rest:
            self.stats.errors += 1
            self.stats.last_error = "torn record at end of rotated file"
        entries = self._parser.flush()
        os.close(self._fd)
        self._fd, self.inode = fd, os.fstat(fd).st_ino
        self.seek_to(0)
        await self._put(entries, 0, 0)
        return True
