"""One segment of a spool: its row in the spool's table (what is durable, read, delivered) and the
writer that owns the active segment's file descriptor (opened once, closed once)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from collector.durable import fsync_directory
from collector.spool.format import HEADER_BYTES, segment_header

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
        """Cut a failed write back off, so no half record sits before the next one."""
        if self._fd is not None:
            os.ftruncate(self._fd, size)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


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
