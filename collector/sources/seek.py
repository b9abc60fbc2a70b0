"""Where to start reading a json-file log: by time (bisection on record timestamps) or at its end.

Lines are in time order, so the first record inside a window is found with ~log2(size/64KiB)
small reads instead of reading the file. Reads use pread: the caller's file offset is untouched.
"""

from __future__ import annotations

import os

import msgspec

from collector.sources.jsonfile import Record
from collector.timefmt import BadTimestamp, parse_timestamp

_BLOCK = 4096
_LINEAR_WINDOW = 64 * 1024
_decode = msgspec.json.Decoder(Record).decode


class _Reader:
    """pread in aligned blocks, each read from the file once (records are scanned many times)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size, self.bytes_read = fd, size, 0
        self._blocks: dict[int, bytes] = {}

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is None:
            block = self._blocks[index] = os.pread(self.fd, _BLOCK, index * _BLOCK)
            self.bytes_read += len(block)
        return block

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`, never past the end of the block holding `offset`."""
        if offset >= self.size:
            return b""
        index, within = divmod(offset, _BLOCK)
        return self._block(index)[within : within + length]

    def line(self, start: int) -> tuple[bytes | None, int]:
        """The bytes from `start` to the next newline (None if the file ends first), and the offset after it."""
        parts: list[bytes] = []
        position = start
        while position < self.size:
            block = self.read(position, _BLOCK)
            if not block:
                break
            newline = block.find(b"\n")
            if newline >= 0:
                parts.append(block[:newline])
                return b"".join(parts), position + newline + 1
            parts.append(block)
            position += len(block)
        return None, self.size

    def boundary(self, offset: int) -> int:
        """The first record start at or after `offset` (a record starts right after a newline)."""
        return 0 if offset <= 0 else self.line(offset - 1)[1]

    def record_at(self, start: int) -> tuple[int | None, int]:
        """(timestamp of the record starting at `start` or None if unreadable, offset after it)."""
        raw, after = self.line(start)
        if raw is None:
            return None, after  # a torn last record
        try:
            return parse_timestamp(_decode(raw).time), after
        except (msgspec.DecodeError, msgspec.ValidationError, BadTimestamp):
            return None, after

    def first_time_from(self, offset: int) -> tuple[int | None, int]:
        """Timestamp and start of the first readable record at or after `offset` (None at the end)."""
        start = self.boundary(offset)
        while start < self.size:
            ts, after = self.record_at(start)
            if ts is not None:
                return ts, start
            start = after
        return None, self.size


def offset_for_time(fd: int, size: int, cutoff_ns: int) -> tuple[int, int]:
    """(offset of the first record with time >= cutoff, bytes read to find it)."""
    reader = _Reader(fd, size)
    lo, hi = 0, size
    while hi - lo > _LINEAR_WINDOW:
        mid = (lo + hi) // 2
        ts, _ = reader.first_time_from(mid)
        if ts is None or ts >= cutoff_ns:
            hi = mid
        else:
            lo = mid
    start = reader.boundary(lo)
    while start < size:
        ts, after = reader.record_at(start)
        if ts is not None and ts >= cutoff_ns:
            return start, reader.bytes_read
        start = after
    return size, reader.bytes_read


def record_time(raw: bytes) -> int | None:
    """The timestamp of one json-file record (its bytes, with or without the newline); None if unreadable."""
    try:
        return parse_timestamp(_decode(raw.rstrip(b"\n")).time)
    except (msgspec.DecodeError, msgspec.ValidationError, BadTimestamp):
        return None


def end_offset(fd: int, size: int) -> int:
    """The end of the last whole record (a record being written stays to be read)."""
    reader = _Reader(fd, size)
    index = (size - 1) // _BLOCK
    while index >= 0:
        block = reader.read(index * _BLOCK, size - index * _BLOCK)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return index * _BLOCK + newline + 1
        index -= 1
    return 0
