"""A container's json-file log as Docker keeps it: the live file and its rotated files.

Docker rotates by renaming: `<id>-json.log` -> `.1` -> `.2` ... and deletes the oldest past
`max-file`; with `compress=true` a rotated `.1` is gzipped in the background into `.1.gz` (the
uncompressed `.1` is removed once the `.gz` is complete) and later renames move `.N.gz`.
Files are told apart by inode and by a fingerprint of their first record (an inode is reused as
soon as Docker deletes a file; a gzipped copy has another inode but the same first record).
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass

_BLOCK = 64 * 1024
_FIRST_LINE_MAX = 1024 * 1024  # Docker's records are at most ~100 KB; past this it is not json-file
_GZ_RAW_CHUNK = 64 * 1024


def fingerprint_of(data: bytes) -> int:
    """A file's identity from its first record (the bytes before the first newline); 0 while the
    first record is not complete."""
    end = data.find(b"\n")
    if end < 0:
        return 0
    return int.from_bytes(hashlib.blake2b(data[:end], digest_size=8).digest(), "big") or 1


@dataclass(frozen=True, slots=True)
class Rotated:
    """One file of the chain as listed: index 0 is the live file."""

    index: int
    name: str
    gz: bool


def list_chain(path: str, allow_holes: bool = False) -> list[Rotated] | None:
    """The live file and every rotated file there now, oldest first; no cap on how many.

    Where `.N` and `.N.gz` both exist, Docker is compressing `.N`: the uncompressed one is whole,
    the `.gz` may not be yet. None while the directory is mid-rotation (no live file, or a hole in
    the numbers: Docker renames one file at a time); `allow_holes` for a hole that stays (a file
    removed by hand)."""
    directory, base = os.path.split(path)
    prefix = base + "."
    found: dict[int, Rotated] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return None
    live = False
    for name in names:
        if name == base:
            live = True
            continue
        if not name.startswith(prefix):
            continue
        suffix = name[len(prefix):]
        gz = suffix.endswith(".gz")
        number = suffix[:-3] if gz else suffix
        if not number.isdigit() or number.startswith("0"):
            continue
        index = int(number)
        if index in found and not found[index].gz:
            continue  # keep the uncompressed one
        found[index] = Rotated(index, os.path.join(directory, name), gz)
    if not live or (not allow_holes and found and sorted(found) != list(range(1, max(found) + 1))):
        return None
    return [found[index] for index in sorted(found, reverse=True)] + [Rotated(0, path, False)]


def _first_record(read_next: Callable[[int], bytes]) -> bytes:
    """The first record (with its newline) of what `read_next(bytes so far)` returns piece by
    piece, or b"" while it is not complete."""
    data = b""
    while len(data) < _FIRST_LINE_MAX:
        block = read_next(len(data))
        if not block:
            return b""
        data += block
        end = data.find(b"\n")
        if end >= 0:
            return data[: end + 1]
    return b""


def first_line_plain(fd: int) -> bytes:
    """The file's first record with its newline, or b"" while it is not complete."""
    return _first_record(lambda offset: os.pread(fd, _BLOCK, offset))


class Gunzip:
    """Reads a `.gz` rotated file through zlib from a held descriptor, in bounded pieces.

    A file Docker is still writing simply ends early: read() returns b"" and `complete` stays
    False; a later read continues where this one stopped (nothing is decompressed twice).
    Blocking: run read() and skip() in a thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.raw_offset = 0
        self.offset = 0  # decompressed bytes handed out
        self._inflate = zlib.decompressobj(wbits=31)

    @property
    def complete(self) -> bool:
        return self._inflate.eof

    def read(self, limit: int) -> bytes:
        inflate = self._inflate
        while not inflate.eof:
            if inflate.unconsumed_tail:
                data = inflate.decompress(inflate.unconsumed_tail, limit)
            else:
                raw = os.pread(self.fd, _GZ_RAW_CHUNK, self.raw_offset)
                if not raw:
                    return b""  # ends early: not written completely yet
                self.raw_offset += len(raw)
                data = inflate.decompress(raw, limit)
            if data:
                self.offset += len(data)
                return data
        return b""

    def skip(self, offset: int) -> bool:
        """Move to decompressed `offset`; False if the file (as written so far) ends before it."""
        while self.offset < offset:
            if not self.read(min(_BLOCK * 16, offset - self.offset)):
                return False
        return True

    def first_line(self) -> bytes:
        """The first record of the decompressed file (a fresh reader over the same descriptor)."""
        reader = Gunzip(self.fd)
        return _first_record(lambda offset: reader.read(_BLOCK))


def fingerprint_fd(fd: int, gz: bool) -> int:
    return fingerprint_of(Gunzip(fd).first_line() if gz else first_line_plain(fd))
