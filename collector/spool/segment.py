"""One segment of a spool: its row in the spool's table (what is durable, read, delivered) and the
writer that owns the active segment's file descriptor (opened once, closed once)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from collector.durable import fsync_directory
from collector.spool.format import HEADER_BYTES, SegmentHeaderError, parse_header, segment_header

log = logging.getLogger(__name__)

SUFFIX = ".seg"


def segment_name(seq: int) -> str:
    return f"{seq:016d}{SUFFIX}"


def segment_seq(name: str) -> int | None:
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else ""
    return int(stem) if stem.isdigit() else None


@dataclass(slots=True)
class Segment:
    seq: int
    path: str
    created_ns: int
    size: int  # durable bytes, header included: readers never look past it
    sealed: bool
    read_at: int = HEADER_BYTES  # the next record not yet read back
    delivered_to: int = HEADER_BYTES  # every record before this offset is delivered (or was skipped)
    ahead: dict[int, int] = field(default_factory=dict)  # delivered out of order: offset -> end

    def resolve(self, offset: int, end: int) -> None:
        """The record (or skipped bytes) at offset..end needs no more sending."""
        if offset != self.delivered_to:
            self.ahead[offset] = end
            return
        self.delivered_to = end
        while self.delivered_to in self.ahead:
            self.delivered_to = self.ahead.pop(self.delivered_to)

    def read(self, offset: int, size: int) -> bytes:
        """Bytes offset..offset+size of its file (blocking)."""
        return read_range(self.path, offset, size)

    @property
    def unread(self) -> bool:
        return self.read_at < self.size

    @property
    def delivered(self) -> bool:
        return self.delivered_to >= self.size and not self.unread


class SegmentWriter:
    """The active segment's file: appended to, fsynced; every method blocks (call it in a thread)."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def create(cls, directory: str, seq: int, created_ns: int) -> SegmentWriter:
        path = os.path.join(directory, segment_name(seq))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        writer = cls(path, fd)
        try:
            writer.write(segment_header(created_ns))
            fsync_directory(directory)
        except OSError:
            writer.close()
            os.unlink(path)
            raise
        return writer

    def write(self, data: bytes) -> None:
        """All of `data`, then fsync: on return it survives a crash."""
        assert self._fd is not None, "segment closed"
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def truncate(self, size: int) -> None:
        """Cut a failed write back off, so no half record sits before the next one (at best: the
        record's CRC still tells it from a whole one when read back)."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def found_segment(seq: int, path: str, delivered_to: int, ahead: dict[int, int]) -> Segment | None:
    """A segment a previous run left, sealed, read and delivered as the cursor says; None if it was
    cut short while being created (it never held a record: removed). SegmentHeaderError if it is not
    a segment this version reads, OSError if it cannot be read (blocking)."""
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        os.unlink(path)
        return None
    created_ns = parse_header(read_range(path, 0, HEADER_BYTES))
    start = min(max(HEADER_BYTES, delivered_to), size)
    return Segment(seq, path, created_ns, size, sealed=True, read_at=start, delivered_to=start,
                   ahead={offset: end for offset, end in ahead.items() if start < offset < size})


def set_aside(path: str, err: SegmentHeaderError) -> int:
    """A segment this version cannot read is renamed `.unreadable` (kept for a look), logged; its size."""
    aside = f"{path}.unreadable"
    log.error("spool segment unreadable; set aside", extra={"path": path, "moved_to": aside, "error": str(err)})
    try:
        size = os.path.getsize(path)
        os.replace(path, aside)
    except OSError:
        return 0
    return size


def batch_size(records: Iterable[int], room: int) -> tuple[int, int]:
    """How many of these record sizes fit in `room` (at least one) and their bytes: the next write."""
    count = size = 0
    for length in records:
        if count and size + length > room:
            break
        count, size = count + 1, size + length
    return count, size


def read_range(path: str, offset: int, size: int) -> bytes:
    """Bytes offset..offset+size of a segment (blocking)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def free_bytes(directory: str) -> int:
    """Free bytes on the directory's volume for an unprivileged writer (blocking)."""
    status = os.statvfs(directory)
    return status.f_bavail * status.f_frsize


def usable_directory(directory: str) -> None:
    """Make the directory if needed; OSError unless it can be written to (blocking)."""
    os.makedirs(directory, exist_ok=True)
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"{directory} is not writable")
