"""A lane's spool: chunks the queue had no room for, on disk, until Loki has them.

Segment files under the lane's directory, one writer: `append` queues an encoded chunk; the writer
task writes and fsyncs what has queued up in one batch, in a thread, then the chunks are *durable*
(`on_durable`). Segments rotate at `segment_bytes`. Reading back goes oldest first, never past what
is durable (`_route`: lane.py moves some records elsewhere); a read-back chunk carries a SpoolMark and
`delivered` advances its segment's delivered prefix; a segment is deleted whole once sealed, read and
delivered. The cursor file (every second) holds the prefixes and the records delivered beyond them.

Bounded by `max_bytes` and by `headroom_bytes` kept free on the volume (for the positions file). A
failure (disk full, unwritable directory, unreadable segment) is counted, logged, and makes the
spool report itself full until a retry works: sources then wait for queue room, other lanes go on.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import time
from collections import deque
from collections.abc import Callable

import msgspec

from collector.pipeline.entry import Chunk, SpoolMark
from collector.spool.cursor import Cursor, load_cursor, save_cursor
from collector.spool.format import HEADER_BYTES, Corrupt, Record, SegmentHeaderError, decode_chunk, encode_chunk, encode_record, scan
from collector.spool.origins import Origins
from collector.spool.segment import Segment, SegmentWriter, batch_size, found_segment, free_bytes, segment_seq, set_aside, usable_directory
from collector.spool.settings import Route, SpoolSettings, SpoolStats

__all__ = ["Spool", "SpoolSettings", "SpoolStats"]

log = logging.getLogger(__name__)

READ_WINDOW = 1024 * 1024  # read back this much of a segment at a time (doubled for a larger record)
ERROR_LOG_INTERVAL = 60.0  # a failing disk is logged once a minute, not once per retry


class Spool:
    def __init__(self, settings: SpoolSettings, on_durable: Callable[[list[Chunk]], None],
                 origins: Origins | None = None, stats: SpoolStats | None = None) -> None:
        self.settings = settings
        self.directory = settings.path
        self.stats = stats or SpoolStats()  # a lane's spools may share one
        self.problem = ""  # why the spool takes nothing now; "" when it is usable
        self._on_durable = on_durable
        self._on_change: Callable[[], None] = lambda: None
        self._segments: dict[int, Segment] = {}  # by sequence number, oldest first; bounded by max_bytes
        self._active: Segment | None = None
        self._writer: SegmentWriter | None = None  # owns the active segment's fd
        self._next_seq = 1
        self._pending: deque[tuple[Chunk, bytes]] = deque()  # appended, not yet durable
        self._pending_bytes = 0
        self._durable_bytes = 0
        self._batch: asyncio.Task[None] | None = None  # the write in progress
        self._saving: asyncio.Task[None] | None = None  # the cursor write in progress
        self._wake = asyncio.Event()
        self._free = 0  # free bytes on the volume at the last look
        self._retry_at = 0.0
        self._error_logged_at = -ERROR_LOG_INTERVAL
        self._cursor_dirty = False
        self._closed = False
        self._waiting = False  # the reader stopped before a record (Route.WAIT)
        self._origins = origins or Origins()  # read-back chunks share their container's Origin object

    def attach(self, on_change: Callable[[], None], held: Callable[[str], bool] | None = None) -> None:
        """Called when room or readable records may have appeared (the queue wakes its waiters);
        `held` is for lane.py (here every record is handed to the queue)."""
        self._on_change = on_change

    # -- startup ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Find the segments a previous run left (blocking: once, before anything runs)."""
        try:
            os.makedirs(self.directory, exist_ok=True)
            names = sorted(os.listdir(self.directory))
            self._free = free_bytes(self.directory)
        except OSError as err:
            self._failed("cannot use the spool directory", err)
            return
        cursor = load_cursor(self.directory)
        for name in names:
            seq = segment_seq(name)
            if seq is not None:
                self._adopt(seq, os.path.join(self.directory, name), cursor)
        self._next_seq = max(self._segments, default=0) + 1
        self._collect()
        if self._segments:
            log.info("spool holds records from the last run", extra={"path": self.directory, "bytes": self.bytes,
                                                                     "segments": len(self._segments)})

    def _adopt(self, seq: int, path: str, cursor: Cursor) -> None:
        try:
            segment = found_segment(seq, path, cursor.delivered_to.get(seq, HEADER_BYTES), cursor.ahead.get(seq, {}))
        except SegmentHeaderError as err:
            self.stats.corrupt_records += 1
            self.stats.skipped_bytes += set_aside(path, err)
            return
        except OSError as err:
            self._failed("cannot read a spool segment", err)
            return
        if segment is None:  # cut short while being created: it never held a record
            self.stats.torn_records += 1
            return
        self._segments[seq] = segment
        self._durable_bytes += segment.size

    # -- what the queue asks -----------------------------------------------------------------------
    @property
    def bytes(self) -> int:
        return self._durable_bytes + self._pending_bytes

    @property
    def segments(self) -> int:
        return len(self._segments)

    def oldest_age(self, now_ns: int) -> float:
        """Seconds since the oldest segment still held was created; 0 when empty."""
        oldest = next(iter(self._segments.values()), None)
        return max(0.0, (now_ns - oldest.created_ns) / 1e9) if oldest else 0.0

    def has_room(self, nbytes: int) -> bool:
        if self.problem or self._closed or (self._pending and self._pending_bytes + nbytes > self.settings.max_pending_bytes):
            return False  # (what waits to be written is held in memory: at most max_pending_bytes)
        return (self.bytes + nbytes <= self.settings.max_bytes
                and self._free - self._pending_bytes - nbytes >= self.settings.headroom_bytes)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def has_unread(self) -> bool:
        return any(segment.unread for segment in self._segments.values())

    def caught_up(self) -> bool:
        """Everything appended is durable and has been read back."""
        return not self._pending and not Spool.has_unread(self)

    # -- writing ------------------------------------------------------------------------------------
    def append(self, chunk: Chunk, payload: builtins.bytes | None = None) -> None:
        """Queue the chunk for the next write (after has_room; a little over the bound is taken);
        `payload`: the chunk encoded already (a record read back and copied)."""
        blob = encode_record(payload if payload is not None else encode_chunk(chunk))
        self._origins.live(chunk.origin)
        self._pending.append((chunk, blob))
        self._pending_bytes += len(blob)
        self._wake.set()

    async def run(self) -> None:
        """The writer: batches appends, retries after failures, checkpoints the cursor."""
        last_checkpoint = time.monotonic()
        while True:
            self._wake.clear()
            now = time.monotonic()
            if self.problem and not self._pending and now >= self._retry_at:
                await self._probe()
            if self._pending and now >= self._retry_at:
                await self._write_pending()
                continue
            if self._cursor_dirty and now - last_checkpoint >= self.settings.checkpoint_interval:
                await self.save_cursor()
                last_checkpoint = now
                continue
            timeouts = [self.settings.checkpoint_interval]  # also how often free space is looked at
            if self._pending or self.problem:
                timeouts.append(self._retry_at - now)
            try:
                async with asyncio.timeout(max(0.0, min(timeouts))):
                    await self._wake.wait()
            except TimeoutError:
                await self._refresh_free()

    async def flush(self) -> None:
        """Write what is queued now (shutdown); stops at the first failure."""
        while self._pending:
            errors = self.stats.write_errors
            await self._write_pending()
            if self.stats.write_errors != errors:
                return

    async def _write_pending(self) -> None:
        while self._batch is not None and not self._batch.done():
            await asyncio.shield(self._batch)
        if self._pending:
            # A task of its own: a cancelled caller must not leave a write half accounted for.
            self._batch = asyncio.create_task(self._write_batch(), name="spool-write")
            await asyncio.shield(self._batch)

    async def _write_batch(self) -> None:
        try:
            if self._writer is None or self._active is None or self._active.size >= self.settings.segment_bytes:
                await self._rotate()
        except OSError as err:
            self._failed("cannot create a spool segment", err)
            return
        writer, active = self._writer, self._active
        assert writer is not None and active is not None
        count, size = batch_size((len(blob) for _, blob in self._pending), self.settings.segment_bytes - active.size)
        data = b"".join(blob for _, blob in list(self._pending)[:count])
        try:
            await asyncio.to_thread(writer.write, data)
        except OSError as err:
            await asyncio.to_thread(writer.truncate, active.size)
            self._seal_active()
            self._failed("cannot write to the spool", err)
            return
        active.size += size
        self._durable_bytes += size
        self._pending_bytes -= size
        durable = [self._pending.popleft()[0] for _ in range(count)]
        self.stats.writes += count
        if self.problem:
            log.info("spool writable again", extra={"path": self.directory})
            self.problem = ""
        await self._refresh_free()
        self._on_durable(durable)
        self._on_change()

    async def _rotate(self) -> None:
        self._seal_active()
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        created_ns = time.time_ns()
        self._writer = await asyncio.to_thread(SegmentWriter.create, self.directory, seq, created_ns)
        self._active = self._segments[seq] = Segment(seq, self._writer.path, created_ns, HEADER_BYTES, sealed=False)
        self._durable_bytes += HEADER_BYTES

    def _seal_active(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
        if self._active is not None:
            self._active.sealed = True
            self._active = None

    async def _probe(self) -> None:
        """After a failure with nothing waiting to be written: is the directory usable again?"""
        try:
            await asyncio.to_thread(usable_directory, self.directory)
        except OSError as err:
            self._failed("cannot use the spool directory", err)
            return
        self.problem = ""
        await self._refresh_free()

    def _failed(self, what: str, err: OSError) -> None:
        self.stats.write_errors += 1
        self.problem = f"{what}: {err}"
        self._retry_at = time.monotonic() + self.settings.retry_interval
        if time.monotonic() - self._error_logged_at >= ERROR_LOG_INTERVAL:
            self._error_logged_at = time.monotonic()
            log.error("spool unusable; sources wait for queue room until it works again",
                      extra={"path": self.directory, "error": self.problem, "write_errors": self.stats.write_errors})

    async def _refresh_free(self) -> None:
        try:
            self._free = await asyncio.to_thread(free_bytes, self.directory)
        except OSError:
            self._free = 0
        self._on_change()

    # -- reading back ---------------------------------------------------------------------------------
    async def read(self, max_bytes: int) -> list[Chunk]:
        """Durable chunks not yet read, oldest first, up to `max_bytes` of them (at least one)."""
        out: list[Chunk] = []
        taken = 0
        while taken < max_bytes and not self._waiting and (segment := self._first_unread()) is not None:
            taken += await self._read_segment(segment, max_bytes - taken, out)
        self._collect()
        return out

    def _route(self, chunk: Chunk, payload: builtins.bytes) -> Route:
        """Where a record read back goes: here, always to the queue (lane.py sets some aside)."""
        return Route.HAND

    def _first_unread(self) -> Segment | None:
        return next((segment for segment in self._segments.values() if segment.unread), None)

    async def _read_segment(self, segment: Segment, budget: int, out: list[Chunk]) -> int:
        window = READ_WINDOW
        while True:
            start, length = segment.read_at, min(segment.size - segment.read_at, window)
            try:
                data = await asyncio.to_thread(segment.read, start, length)
            except OSError as err:
                self._skip(segment, start, segment.size, f"spool segment unreadable: {err}")
                return 0
            if len(data) < length:  # shorter than it was: the rest is gone
                self._skip(segment, start + len(data), segment.size, "spool segment shorter than written")
            at_eof = start + len(data) >= segment.size
            taken, progressed = 0, False
            for item in scan(data, base=start, at_eof=at_eof):
                progressed = True
                segment.read_at = item.end
                if item.offset in segment.ahead:  # delivered (or set aside) before a restart
                    continue
                if not isinstance(item, Record):
                    self._skip(segment, item.offset, item.end, "corrupt spool record skipped" if isinstance(item, Corrupt) else "")
                    continue
                try:
                    chunk = decode_chunk(item.payload)
                except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as err:
                    self._skip(segment, item.offset, item.end, f"spool record undecodable: {err}")
                    continue
                chunk.origin = self._origins.seen(chunk.origin)
                chunk.spooled = SpoolMark(self.settings.lane, segment.seq, item.offset, item.end, self.settings.chain)
                route = self._route(chunk, item.payload)
                if route is Route.WAIT:
                    segment.read_at, self._waiting = item.offset, True
                    return taken
                if route is Route.HAND:
                    out.append(chunk)
                    self.stats.reads += 1
                taken += chunk.nbytes
                if taken >= budget:
                    break
            if progressed or at_eof:
                return taken
            window *= 2  # one record larger than the window

    def _skip(self, segment: Segment, offset: int, end: int, why: str) -> None:
        """Bytes that will never be sent: a torn tail (`why` empty) or corruption (counted, logged)."""
        segment.read_at = max(segment.read_at, end)
        segment.resolve(offset, end)
        self._cursor_dirty = True
        if not why:
            self.stats.torn_records += 1
            return
        self.stats.corrupt_records += 1
        self.stats.skipped_bytes += end - offset
        log.error(why, extra={"path": segment.path, "offset": offset, "skipped_bytes": end - offset})

    # -- delivery --------------------------------------------------------------------------------
    def delivered(self, mark: SpoolMark) -> None:
        """Loki has the chunk read back at `mark` (or it was counted as dropped)."""
        segment = self._segments.get(mark.segment)
        if segment is None:
            return
        segment.resolve(mark.offset, mark.end)
        self._cursor_dirty = True
        if segment.delivered:
            self._collect()

    def _collect(self) -> None:
        """Delete segments that are sealed, read and delivered (the active one too when idle)."""
        writing = bool(self._pending) or (self._batch is not None and not self._batch.done())
        freed = False
        for segment in [s for s in self._segments.values() if s.delivered]:
            if segment is self._active:
                if writing:
                    continue
                self._seal_active()
            try:
                os.unlink(segment.path)
            except FileNotFoundError:
                pass
            except OSError as err:
                log.error("cannot delete a delivered spool segment", extra={"path": segment.path, "error": str(err)})
                continue
            del self._segments[segment.seq]
            self._durable_bytes -= segment.size
            self._cursor_dirty = freed = True
        if freed:
            self._on_change()

    async def save_cursor(self) -> None:
        while self._saving is not None and not self._saving.done():  # one writer of the file at a time
            await asyncio.shield(self._saving)
        self._cursor_dirty = False
        cursor = Cursor({segment.seq: segment.delivered_to for segment in self._segments.values()},
                        {segment.seq: dict(segment.ahead) for segment in self._segments.values() if segment.ahead})
        # A task of its own: a cancelled caller must not leave a write under way as the next one starts.
        self._saving = asyncio.create_task(self._write_cursor(cursor), name="spool-cursor")
        await asyncio.shield(self._saving)

    async def _write_cursor(self, cursor: Cursor) -> None:
        try:
            await asyncio.to_thread(save_cursor, self.directory, cursor)
        except OSError as err:
            self._cursor_dirty = True
            self._failed("cannot write the spool cursor", err)

    # -- the end ------------------------------------------------------------------------------------
    async def close(self) -> None:
        """Write what is queued, checkpoint the cursor, close the segment file (once)."""
        if self._closed:
            return
        if not self.problem or self._pending:
            await self.flush()
        if not self.problem:
            await self.save_cursor()
        self.abandon()

    def abandon(self) -> None:
        """Close the file without writing anything more (what a crash leaves; also the end of close)."""
        self._closed = True
        self._seal_active()
