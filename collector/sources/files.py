"""json-file sources: one tailer task per container log, woken by the process's inotify hub.

A tailer reads the container's whole chain of files (`logchain.py`): the file it resumes in, every
rotated file newer than that, oldest first, then the live file, holding each open from the moment
it knows of it (a `--rm` container's log is unlinked ~0.3 s after it starts; a rotated file is
deleted `max-file` rotations later), so an open handle still reads it to its end. What Docker
deleted before anybody opened it is counted and logged. A slow safety poll covers a missed event.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from collector.pipeline.entry import Entry, FilePosition, Origin
from collector.pipeline.queue import ChunkQueue
from collector.sources.chainopen import open_chain
from collector.sources.emit import emit, joined
from collector.sources.gzread import GzPatience, read_gz
from collector.sources.handles import OwnedFd
from collector.sources.heldchain import HeldChain, LogFile
from collector.sources.inotify import InotifyHub, Wakeup
from collector.sources.jsonfile import JsonFileParser
from collector.sources.logchain import fingerprint_of, first_line_plain
from collector.sources.rotation import FileLosses, look_ahead
from collector.sources.seek import end_offset, offset_for_time, record_time
from collector.sources.source import SourceStats
from collector.transform.lines import LineProcessor
from collector.transform.multiline import Joiner
from collector.transform.routing import StreamLabeler

__all__ = ["FileTailer", "InotifyHub", "TailerSettings", "Wakeup", "fingerprint_of"]

log = logging.getLogger(__name__)

# A record longer than this without a newline is not json-file output: drop it rather than grow.
_MAX_RECORD_BYTES = 8 * 1024 * 1024
MAX_POLL_BACKOFF = 4  # an idle file is polled at most every 4 x sources.poll_interval


@dataclass(slots=True)
class TailerSettings:
    read_chunk_bytes: int
    poll_interval: float
    drain_quiet: float = 0.2  # after `die`, EOF must stay quiet this long before the file is closed


class FileTailer:
    """Reads one container's json-file log from a position to wherever the container leaves it.

    Rotation: when the live file is no longer the one we hold, the files newer than ours are
    opened, ours is read once more to its end (a record may have landed between our last read and
    the rename), then the next one is read. Truncation: starts again from 0.
    """

    kind = "file"
    processor: LineProcessor | None = None  # per-line rules, set by the registry
    joiner: Joiner | None = None  # multiline joining, set by the registry through join_lines()
    labeler: StreamLabeler | None = None  # labels from fields and the cardinality guard, set by the registry

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
        preopened: OwnedFd | None = None,
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
        self._held = HeldChain(path, hub)  # owns every file this tailer opens
        self._losses = FileLosses(stats, origin, path)
        self._gz_patience = GzPatience()
        self.offset = 0
        try:
            # Opened at once (not in the task): the handles must exist before the files can be deleted.
            self.seek_to(open_chain(self._held, position, preopened, from_oldest, self._losses))
        except BaseException:
            self.close()  # open_chain closed whatever it opened; this drops the inotify subscription
            raise

    @property
    def _file(self) -> LogFile | None:
        return self._held.current

    # -- what the registry and /status use -------------------------------------------------------
    @property
    def inode(self) -> int:
        return self._file.inode if self._file is not None else 0

    @property
    def reading_name(self) -> str:
        """The name the current file had when it was opened."""
        return self._file.name if self._file is not None else self.path

    @property
    def fd(self) -> int:
        return self._file.fd if self._file is not None else -1

    def seek_to(self, offset: int) -> None:
        """Read on from `offset` of the current file, a record boundary."""
        assert self._file is not None
        self.offset = offset
        if self._file.gunzip is None:
            os.lseek(self._file.fd, offset, os.SEEK_SET)
        self.queued_position = FilePosition(self._file.inode, offset, self._file.fingerprint)

    def start_at_end(self) -> int:
        """First meeting with `start_at: end`: skip what is written already; returns the offset."""
        self._held.keep_from(len(self._held.ahead))
        offset = end_offset(self.fd, os.fstat(self.fd).st_size)
        self.seek_to(offset)
        return offset

    def start_at_time(self, cutoff_ns: int) -> tuple[int, int, int]:
        """First meeting with a `start_at` window: begin at the first record at or after the cutoff,
        searching the rotated files too (the newest file that begins before the cutoff holds it;
        the older ones are dropped, that file is bisected). Returns (offset, file size, bytes read).
        A `.gz` cannot be bisected: the window then begins at its start (a few lines early)."""
        files = self._held.files()
        chosen = 0
        for index in range(len(files) - 1, -1, -1):
            opened = files[index]
            first = opened.gunzip.first_line() if opened.gunzip is not None else first_line_plain(opened.fd)
            ts = record_time(first) if first else None
            if ts is not None and ts < cutoff_ns:
                chosen = index
                break
        self._held.keep_from(chosen)
        assert self._file is not None
        if self._file.gunzip is not None:
            self.seek_to(0)
            return 0, self._file.size(), 0
        size = self._file.size()
        offset, bytes_read = offset_for_time(self._file.fd, size, cutoff_ns)
        self.seek_to(offset)
        return offset, size, bytes_read

    def drain(self) -> None:
        """The container died: read to the end, deliver unfinished lines, then stop."""
        self.draining = True
        self._wake.set()

    def resume(self) -> None:
        """Started again (a restart keeps the id and appends to the same file): keep following."""
        self.draining = False

    def unread_bytes(self) -> int | None:
        if self._file is None:
            return None
        if self._file.gunzip is not None:
            unread = 0  # the size of its content is not known before it is read
        else:
            unread = max(0, self._file.size() - self.offset)
        return unread + sum(f.size() for f in self._held.ahead if f.gunzip is None)

    def snapshot(self) -> dict[str, object]:
        return {"path": self.path, "inode": self.inode, "read_offset": self.offset,
                "rotated_files_ahead": len(self._held.ahead), "rotated_files_lost": self.stats.files_lost}

    async def run(self) -> None:
        try:
            await self._follow()
        finally:
            self.close()

    def close(self) -> None:
        self._held.close()
        self._hub.unsubscribe(self._directory, self._wake)

    # -- reading ---------------------------------------------------------------------------------
    async def _follow(self) -> None:
        rest = b""
        quiet_since: float | None = None
        quiet_polls = 0  # safety polls in a row that found nothing: the next one waits longer
        loop = asyncio.get_running_loop()
        while True:
            # Clear before reading: a write that lands during the read sets it again.
            self._wake.clear()
            # Room first, then read: a tailer held back by a full queue holds nothing read.
            await self._queue.room(self._settings.read_chunk_bytes, self.origin.container_id)
            data = await self._read()
            if data:
                quiet_since = None
                quiet_polls = 0
                rest = await self._consume(rest + data if rest else data)
                await asyncio.sleep(0)  # one chunk per turn: quiet containers and events keep flowing
                if self._wake.structure:
                    self._wake.structure = False
                    look_ahead(self._held, self._losses)
                    self._wake.structure = self._held.unsettled > 0  # mid-rotation: look again next chunk
                continue
            assert self._file is not None
            if self._held.ahead:
                # A newer file exists, so ours is complete: move on (a .gz once it is whole).
                gunzip = self._file.gunzip
                if (gunzip is None or gunzip.complete or self._file.damaged
                        or self._gz_patience.abandoned(self._file, loop.time(), self._losses)):
                    rest = await self._next_file(rest)
                    continue
            # At EOF of the live file. Rotation or truncation is looked for only when the
            # directory's files changed or the safety poll fired: plain writes cost no stat calls.
            elif await self._truncated(rest):
                rest = b""
                continue
            elif self._wake.structure and look_ahead(self._held, self._losses):
                continue  # read ours once more to its end before moving on
            self._wake.structure = False
            if self.draining and not self._held.ahead:
                now = loop.time()
                quiet_since = quiet_since or now
                if now - quiet_since >= self._settings.drain_quiet:
                    await self._finish(rest)
                    return
                timeout = self._settings.drain_quiet
            else:
                # An idle file's safety poll backs off (500 idle containers polled every 2 s were
                # most of the collector's idle CPU); any event or data brings it back.
                timeout = self._settings.poll_interval * min(1 << quiet_polls, MAX_POLL_BACKOFF)
            joining = self.joiner.time_left() if self.joiner is not None else None
            try:
                async with asyncio.timeout(timeout if joining is None else min(timeout, joining)):
                    await self._wake.wait()
                quiet_polls = 0
            except TimeoutError:
                quiet_polls = min(quiet_polls + 1, 8)
                if joining is not None and joining < timeout:
                    await self._put([], 0, self._parser.resume_offset(self.offset))  # a joined entry's time is up
                    continue
                self._wake.structure = True  # a missed event must not stall us: look again

    async def _read(self) -> bytes:
        current = self._file
        assert current is not None
        if current.gunzip is None:
            return os.read(current.fd, self._settings.read_chunk_bytes)
        return await read_gz(current, self.offset, self._settings.read_chunk_bytes, self._losses)
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
        assert self._file is not None
        if start == 0 and not self._file.fingerprint:
            self._file.fingerprint = fingerprint_of(whole)
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

    def join_lines(self, joiner: Joiner) -> None:
        self.joiner = joiner
        self._parser.starts = []  # the parser now says where each entry starts

    async def _put(self, entries: list[Entry], nbytes: int, resume: int, final: bool = False) -> None:
        # Counted here, not where records are parsed: a final line without newline comes from the
        # parser's flush at EOF, truncation or rotation.
        self.stats.lines += len(entries)
        entries, resume = joined(self, entries, self._parser.starts, resume, final)
        assert self._file is not None
        position = FilePosition(self._file.inode, resume, self._file.fingerprint)
        emit(self, self._queue, entries, nbytes, position)  # after room() in _follow
        # Where a new run of this container continues if this one ends now.
        self.queued_position = position

    async def _finish(self, rest: bytes) -> None:
        if rest:
            # A trailing record without newline: Docker always ends records with one, so it is torn.
            self.stats.errors += 1
            self.stats.last_error = "torn record at end of file"
        entries = self._parser.flush()
        await self._put(entries, 0, self.offset, final=True)

    async def _truncated(self, rest: bytes) -> bool:
        """At EOF: the file is shorter than what we read (truncate -s0): start again from 0."""
        assert self._file is not None
        if self._file.gunzip is not None or self._file.size() >= self.offset:
            return False
        log.warning("log file truncated, reading from its start", extra={"path": self.path})
        self.stats.truncations += 1
        await self._finish(rest)
        self._file.fingerprint = 0
        self.seek_to(0)
        return True

    async def _next_file(self, rest: bytes) -> bytes:
        """Ours is read to its end and a newer file exists: its unfinished lines end here."""
        if rest:
            self.stats.errors += 1
            self.stats.last_error = "torn record at end of rotated file"
        entries = self._parser.flush()
        self._held.advance()
        self._gz_patience.reset()
        self.stats.rotations += 1
        self.seek_to(0)
        await self._put(entries, 0, 0, final=True)  # a joined entry does not span two files
        return b""
