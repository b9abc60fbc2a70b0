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
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from collector.pipeline.entry import Entry, FilePosition, Origin
from collector.pipeline.queue import ChunkQueue
from collector.sources.handles import OwnedFd
from collector.sources.inotify import InotifyHub, Wakeup
from collector.sources.jsonfile import JsonFileParser
from collector.sources.logchain import Gunzip, Rotated, fingerprint_fd, fingerprint_of, first_line_plain, list_chain
from collector.sources.seek import end_offset, offset_for_time, record_time
from collector.sources.source import SourceStats
from collector.transform.lines import LineProcessor
from collector.transform.multiline import Joiner
from collector.transform.routing import StreamLabeler, chunks_of

__all__ = ["FileTailer", "InotifyHub", "TailerSettings", "Wakeup", "fingerprint_of"]

log = logging.getLogger(__name__)

# A record longer than this without a newline is not json-file output: drop it rather than grow.
_MAX_RECORD_BYTES = 8 * 1024 * 1024


# == the files held open ===========================================================================
@dataclass(slots=True, eq=False)
class LogFile:
    """One file of the chain, held open: it owns its descriptor."""

    handle: OwnedFd
    inode: int
    name: str  # its name when opened (Docker renames it later)
    seq: int | None  # which live file it was: 0 the live file when the tailer began, -k its .k
    gunzip: Gunzip | None = None
    fingerprint: int = 0
    damaged: bool = False  # a .gz that zlib cannot inflate past some point: the rest is skipped

    @classmethod
    def adopt(cls, handle: OwnedFd, name: str, seq: int | None, gz: bool) -> LogFile:
        """Take `handle` over; if it cannot be made one (a damaged .gz), it is closed here."""
        try:
            fd = handle.fd
            # A .gz's first record is one small inflate away: every position names its file.
            return cls(handle, os.fstat(fd).st_ino, name, seq, Gunzip(fd) if gz else None, fingerprint_fd(fd, gz))
        except BaseException:
            handle.close()
            raise

    @property
    def fd(self) -> int:
        return self.handle.fd

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        self.handle.close()


def gz_fingerprint_of(handle: OwnedFd) -> int:
    """0 (matches nothing) for a `.gz` whose start zlib cannot inflate."""
    try:
        return fingerprint_fd(handle.fd, gz=True)
    except zlib.error:
        return 0


def gz_fingerprint_at(name: str) -> int:
    """The fingerprint of the `.gz` named `name`; 0 when it is gone or damaged."""
    try:
        handle = OwnedFd.open(name)
    except FileNotFoundError:
        return 0
    with handle:
        return gz_fingerprint_of(handle)


class HeldChain:
    """The files of one container's chain a tailer holds open (the one it reads, the newer ones
    ahead, oldest first: the last is the live one), and the inotify hub's count of the live
    name's creations that tells which live file each was. Every file it holds is closed once: when
    it is dropped, or by close()."""

    def __init__(self, path: str, hub: InotifyHub) -> None:
        self.path = path
        self.hub = hub
        self.directory, self.base = os.path.split(path)
        self.current: LogFile | None = None
        self.ahead: deque[LogFile] = deque()
        self.created_base = 0  # hub creations of the live name when the tailer began (seq 0)
        self.overflows = hub.overflows
        self.unsettled = 0  # looks in a row that found the directory mid-rotation

    def created(self) -> int:
        return self.hub.creations(self.directory, self.base)

    def listed(self, tries: int = 100, holes_after: int | None = None) -> list[Rotated] | None:
        """The chain as it is now, with the hub's counts brought up to the same moment. A rotation
        is a few renames, so a stable listing comes quickly; a hole that stays is taken as it is."""
        for attempt in range(tries):
            self.hub.sync()
            created = self.created()
            chain = list_chain(self.path, allow_holes=attempt >= (tries - 1 if holes_after is None else holes_after))
            self.hub.sync()
            if chain is not None and self.created() == created:
                if self.current is None:
                    self.created_base = created
                return chain
            if not os.path.isdir(self.directory):
                return None
        return None

    def hold(self, opened: LogFile) -> None:
        """The next file in reading order: the current one if there is none yet, else one ahead."""
        if self.current is None:
            self.current = opened
        else:
            self.ahead.append(opened)

    def files(self) -> list[LogFile]:
        assert self.current is not None
        return [self.current, *self.ahead]

    def keep_from(self, index: int) -> None:
        """Close the files older than `index` (0: the current one); read from that one on."""
        files = self.files()
        for dropped in files[:index]:
            dropped.close()
        self.current, self.ahead = files[index], deque(files[index + 1:])

    def advance(self) -> None:
        """The current file is read to its end: close it, the next one ahead is read now."""
        assert self.current is not None
        self.current.close()
        self.current = self.ahead.popleft()

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        while self.ahead:
            self.ahead.popleft().close()


# == where to begin: opening the chain =============================================================
def open_chain(held: HeldChain, position: FilePosition | None, preopened: OwnedFd | None, from_oldest: bool,
               losses: FileLosses) -> int:
    """Open at once (not in the task): the handles must exist before the files can be deleted.
    Returns the offset to read the current file from.

    `preopened` is the live file, opened when the start event arrived (before inspect); it is
    owned here from the call on, whatever happens. With a saved position, the file it names (same
    inode and first record, or its `.gz`) is read from there, then every newer file; if it is
    gone, Docker deleted it with whatever was left unread: counted, and every file there is read.
    Without one: `from_oldest` starts at the oldest rotated file (a fast writer may have rotated
    before the start event reached us), else at the live file.
    """
    try:
        for attempt in range(3):
            chain = held.listed()
            if chain is None:
                # The directory is gone (a removed container whose log we hold) or mid-rotation.
                handle, preopened = preopened or OwnedFd.open(held.path), None
                held.current = LogFile.adopt(handle, held.path, None, gz=False)
                same = position is not None and position.inode == held.current.inode
                return position.offset if position is not None and same else 0
            first, offset = _first_of(chain, position, from_oldest)
            try:
                preopened = _open_entries(held, chain[max(first, 0):], preopened, losses)
            except FileNotFoundError:
                held.close()  # Docker renamed a file between the listing and the open
                if attempt == 2:
                    raise
                continue
            break
        if first == -1:
            losses.lost(1, None, "the saved file was deleted (rotated away) before it was read to its end")
        if preopened is not None and position is None and from_oldest:
            # The file held since the start event is in the chain no more: rotated past every
            # file there (a fast writer with a small max-file). It is the oldest: read it first.
            handle, preopened = preopened, None
            oldest = LogFile.adopt(handle, held.path, None, gz=False)
            if held.current is not None:
                held.ahead.appendleft(held.current)
            held.current = oldest
        if held.current is None:
            raise FileNotFoundError(f"no readable file in {held.directory}")  # every one was a damaged .gz
        return offset
    except BaseException:
        held.close()
        raise
    finally:
        if preopened is not None:
            preopened.close()


def _open_entries(held: HeldChain, entries: list[Rotated], preopened: OwnedFd | None,
                  losses: FileLosses) -> OwnedFd | None:
    """Open `entries` (oldest first) as the current file and the ones ahead; returns the
    preopened descriptor if it was not one of them. A damaged `.gz` is counted and skipped."""
    for entry in entries:
        handle = _open_entry(entry, preopened)
        if handle is preopened:
            preopened = None
        opened = adopt_or_skip(handle, entry.name, -entry.index, entry.gz, losses)
        if opened is not None:
            held.hold(opened)
    return preopened


def _first_of(chain: list[Rotated], position: FilePosition | None, from_oldest: bool) -> tuple[int, int]:
    """(index into `chain` to begin at, offset there); index -1: the saved file is gone, begin
    at the oldest file."""
    if position is None:
        return (0 if from_oldest else len(chain) - 1), 0
    for at, entry in enumerate(chain):
        if _is_saved_file(entry, position):
            return at, position.offset
    return -1, 0


def _is_saved_file(entry: Rotated, position: FilePosition) -> bool:
    try:
        handle = OwnedFd.open(entry.name)
    except FileNotFoundError:
        return False
    with handle:
        if entry.gz:
            return position.fingerprint != 0 and gz_fingerprint_of(handle) == position.fingerprint
        st = os.fstat(handle.fd)
        if st.st_ino != position.inode or st.st_size < position.offset:
            return False
        return position.fingerprint == 0 or fingerprint_fd(handle.fd, gz=False) == position.fingerprint


def _open_entry(entry: Rotated, preopened: OwnedFd | None) -> OwnedFd:
    if preopened is not None and not entry.gz:
        try:
            if os.stat(entry.name).st_ino == os.fstat(preopened.fd).st_ino:
                return preopened
        except FileNotFoundError:
            pass
    return OwnedFd.open(entry.name)


# == rotation and lost files =======================================================================
# A reader that is behind holds at most this many newer files open (each keeps a deleted file's
# disk space until it is read); past that, what Docker deletes before it is reached is counted.
_MAX_AHEAD = 16
# Each lost file is logged; a reader far behind logs at most this many lines per gap.
_LOST_LOG_LINES = 10


class FileLosses:
    """What a tailer could not read, counted in its stats and logged: files Docker deleted before
    they were opened, `.gz` files zlib cannot inflate."""

    def __init__(self, stats: SourceStats, origin: Origin, path: str) -> None:
        self.stats = stats
        self.origin = origin
        self.path = path

    def lost(self, files: int, nbytes: int | None, why: str) -> None:
        self.stats.files_lost += files
        self.stats.lose("rotated_file_deleted", files)
        if nbytes:
            self.stats.lost_bytes += nbytes
        for index in range(min(files, _LOST_LOG_LINES)):
            log.warning("json-file log lost: " + why, extra={
                "container_id": self.origin.container_id[:12], "path": self.path,
                "file": index + 1, "files_lost": files, **({"lost_bytes": nbytes} if nbytes else {})})

    def damaged(self, name: str, err: zlib.error) -> None:
        """A rotated `.gz` zlib cannot inflate (a power cut while dockerd compressed it): what it
        holds from there on is lost; the files around it are read as usual."""
        self.stats.errors += 1
        self.stats.last_error = f"damaged {os.path.basename(name)}: {err}"
        self.lost(1, None, f"{os.path.basename(name)} is damaged ({err}); the rest of it is skipped")


def adopt_or_skip(handle: OwnedFd, name: str, seq: int | None, gz: bool, losses: FileLosses) -> LogFile | None:
    """The file as one of ours; None for a `.gz` whose start cannot be inflated (counted)."""
    try:
        return LogFile.adopt(handle, name, seq, gz)
    except zlib.error as err:
        if not gz:
            raise
        losses.damaged(name, err)
        return None


def look_ahead(held: HeldChain, losses: FileLosses) -> bool:
    """After the directory changed: if the newest file we know of (ours, at EOF of the live
    file; else the last one ahead) is the live file no more, open every file newer than it
    (read after ours, oldest first). Also done between chunks of a reader that is behind, so
    Docker deleting a file it has not reached yet loses nothing (up to _MAX_AHEAD files)."""
    newest = held.ahead[-1] if held.ahead else held.current
    assert newest is not None
    if newest.gunzip is not None or len(held.ahead) >= _MAX_AHEAD:
        return False
    try:
        if os.stat(held.path).st_ino == newest.inode:
            held.unsettled = 0
            return False
    except FileNotFoundError:
        return False  # removed (destroy) or mid-rotation: keep our handle, the poll looks again
    newer = _newer_files(held, newest, 5 if held.unsettled < 3 else 0, losses)
    if not newer:
        held.unsettled += 1
        return False  # mid-rotation: Docker's creating the live file wakes us, or the poll does
    held.unsettled = 0
    held.ahead.extend(newer)
    return True


def _newer_files(held: HeldChain, current: LogFile, holes_after: int, losses: FileLosses) -> list[LogFile]:
    chain = held.listed(tries=5, holes_after=holes_after)
    if chain is None:
        return []
    live_seq = held.created() - held.created_base
    ours = _find(chain, current)
    if ours is not None:
        if current.seq != live_seq - chain[ours].index:
            # Events were missed (queue overflow, no watch): count on from where we are.
            current.seq = live_seq - chain[ours].index
        held.overflows = held.hub.overflows
        newer = chain[ours + 1:]
    else:
        newer = chain
        _count_deleted(held, current, chain[0], live_seq, losses)
        live_seq = held.created() - held.created_base  # re-anchored if it could not be told
    opened: list[LogFile] = []
    try:
        for entry in newer:
            made = adopt_or_skip(OwnedFd.open(entry.name), entry.name, live_seq - entry.index, entry.gz, losses)
            if made is not None:
                opened.append(made)
    except BaseException as err:
        for made in opened:
            made.close()
        if isinstance(err, FileNotFoundError):
            return []  # renamed meanwhile: list again at the next wake
        raise
    return opened


def _find(chain: list[Rotated], current: LogFile) -> int | None:
    """Where our file is in the chain now: by inode, or as the .gz Docker made of it."""
    for at, entry in enumerate(chain):
        if entry.gz:
            continue
        try:
            if os.stat(entry.name).st_ino == current.inode:
                return at
        except FileNotFoundError:
            continue
    if current.fingerprint:
        for at, entry in enumerate(chain):
            if entry.gz and gz_fingerprint_at(entry.name) == current.fingerprint:
                return at
    return None


def _count_deleted(held: HeldChain, current: LogFile, oldest: Rotated, live_seq: int, losses: FileLosses) -> None:
    """Our file is gone from the directory (we read it through our handle): the files between
    it and the oldest one still there were deleted unread."""
    hub = held.hub
    if hub.overflows != held.overflows or not hub.watching(held.directory) or current.seq is None:
        held.overflows = hub.overflows
        log.warning("rotated files may have been deleted unread; how many cannot be told (inotify events were missed)",
                    extra={"container_id": losses.origin.container_id[:12], "path": held.path})
        held.created_base = held.created() - (current.seq or 0) - 1 - oldest.index
        return
    missing = (live_seq - oldest.index) - current.seq - 1
    if missing > 0:
        losses.lost(missing, None, "rotated file deleted by Docker before it was read (the reader was behind)")


# == reading a .gz =================================================================================
# A `.gz` that stops growing before its end for this long was abandoned (Docker died mid-compress).
_GZ_PATIENCE = 60.0

_T = TypeVar("_T")


async def in_thread(call: Callable[[], _T]) -> _T:
    """Run a read of a held file in a thread. Cancelled meanwhile, it still waits for the thread:
    the file is closed after this returns, and the thread must not read a number reused by then."""
    done = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        while not done.done():
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                continue
            except Exception:  # noqa: BLE001 - we are cancelled: its own error no longer matters
                break
        raise


async def read_gz(current: LogFile, offset: int, chunk: int, losses: FileLosses) -> bytes:
    """Up to `chunk` bytes of a `.gz`'s content from `offset`; b"" at its end so far, or once it
    proved damaged (counted)."""
    gunzip = current.gunzip
    assert gunzip is not None
    if current.damaged:
        return b""
    # Decompression costs CPU: off the loop.
    try:
        if gunzip.offset < offset and not await in_thread(lambda: gunzip.skip(offset)):
            return b""  # resuming inside a .gz that is not written that far yet
        return await in_thread(lambda: gunzip.read(chunk))
    except zlib.error as err:
        current.damaged = True
        losses.damaged(current.name, err)
        return b""


class GzPatience:
    """A .gz that ends early is being written: wait for it, unless it stopped growing long ago."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: tuple[float, int] | None = None  # since when a .gz ends early, at what size

    def reset(self) -> None:
        self._waiting = None

    def abandoned(self, current: LogFile, now: float, losses: FileLosses) -> bool:
        size = current.size()
        if self._waiting is None or self._waiting[1] != size:
            self._waiting = (now, size)
            return False
        if now - self._waiting[0] < _GZ_PATIENCE:
            return False
        losses.lost(1, None, f"{current.name} ends before its end and stopped growing {_GZ_PATIENCE:.0f}s ago")
        return True


# == the tailer ====================================================================================
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
        loop = asyncio.get_running_loop()
        while True:
            # Clear before reading: a write that lands during the read sets it again.
            self._wake.clear()
            # Room first, then read: a tailer held back by a full queue holds nothing read.
            await self._queue.room(self._settings.read_chunk_bytes, self.origin.container_id)
            data = await self._read()
            if data:
                quiet_since = None
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
                timeout = self._settings.poll_interval
            joining = self.joiner.time_left() if self.joiner is not None else None
            try:
                async with asyncio.timeout(timeout if joining is None else min(timeout, joining)):
                    await self._wake.wait()
            except TimeoutError:
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
        if self.joiner is not None:
            entries, resume = self.joiner.take(entries, self._parser.starts if entries else [], resume, final)
        assert self._file is not None
        position = FilePosition(self._file.inode, resume, self._file.fingerprint)
        if self.processor is not None:
            entries = self.processor.process(entries)  # dropped lines still move the position
        for chunk in chunks_of(self.origin, entries, nbytes, position, self.labeler):
            # After room() in _follow; the flushes at a file's end (a pending line) add a little over.
            self._queue.put_nowait(chunk)
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
