"""The spool's on-disk format (pure: no I/O).

A segment file is a header (magic, format version, when it was created) followed by records, each
`magic | length | crc | payload`: the CRC32 covers the length and the payload, so a flipped bit in
either is caught. CRC32 from zlib, not CRC32C: it is in the standard library (no dependency for a
check against torn writes and bad sectors, not against an adversary), and at ~1 GB/s it is far
faster than the rest of the path.

The payload is one chunk in msgpack, with everything needed to send it after its container is
gone: labels, tenant, structured metadata, entries, and the position it was read up to.

`scan` reads records back from a buffer. An incomplete last record is *torn* (a crash mid-write:
it was never fsynced, so never acknowledged): reported, not counted as corruption. A record that
fails its check is *corrupt*: the scanner resynchronises on the next valid record and reports the
bytes skipped.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import msgspec

from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin, Position, StreamPosition
from collector.speedups import speedups

SEGMENT_MAGIC = b"DLCSPOOL"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sIQ")  # magic, version, created (ns since the epoch)
HEADER_BYTES = _HEADER.size

RECORD_MAGIC = b"\xd5\x90\x01\xec"
_RECORD = struct.Struct(">4sII")  # magic, payload length, crc32(length bytes + payload)
RECORD_HEADER_BYTES = _RECORD.size
MAX_RECORD_BYTES = 64 * 1024 * 1024  # far above any chunk; a larger length is corruption


class SegmentHeaderError(ValueError):
    """Not a segment this version can read."""


def segment_header(created_ns: int) -> bytes:
    return _HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, created_ns)


def parse_header(data: bytes) -> int:
    """The segment's creation time; SegmentHeaderError if it is not a segment of this version."""
    if len(data) < HEADER_BYTES:
        raise SegmentHeaderError(f"short header ({len(data)} bytes)")
    magic, version, created_ns = _HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise SegmentHeaderError("not a spool segment (bad magic)")
    if version != FORMAT_VERSION:
        raise SegmentHeaderError(f"segment format version {version}; this collector reads {FORMAT_VERSION}")
    return int(created_ns)


# -- records -----------------------------------------------------------------------------------
def _crc(length: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack(">I", length)))


def encode_record(payload: bytes) -> bytes:
    return _RECORD.pack(RECORD_MAGIC, len(payload), _crc(len(payload), payload)) + payload


class Record(NamedTuple):
    offset: int
    end: int
    payload: bytes


class Corrupt(NamedTuple):
    """Bytes skipped: they failed their check."""

    offset: int
    end: int


class Torn(NamedTuple):
    """An incomplete last record: a write cut short by a crash."""

    offset: int
    end: int


def _valid_at(data: memoryview, at: int) -> int:
    """End of the valid record at `at` (relative), or -1."""
    if at + RECORD_HEADER_BYTES > len(data):
        return -1
    magic, length, crc = _RECORD.unpack_from(data, at)
    end = at + RECORD_HEADER_BYTES + length
    if magic != RECORD_MAGIC or length > MAX_RECORD_BYTES or end > len(data):
        return -1
    return end if _crc(length, data[at + RECORD_HEADER_BYTES:end]) == crc else -1


def _incomplete_at(data: memoryview, at: int) -> bool:
    """Could the bytes from `at` to the end be the start of a record whose write was cut short?"""
    rest = bytes(data[at:at + RECORD_HEADER_BYTES])
    if len(rest) < RECORD_HEADER_BYTES:
        return RECORD_MAGIC.startswith(rest[:4])
    magic, length, _ = _RECORD.unpack(rest)
    return magic == RECORD_MAGIC and length <= MAX_RECORD_BYTES and at + RECORD_HEADER_BYTES + length > len(data)


def _next_valid(data: memoryview, start: int) -> int:
    """Offset (relative) of the next valid record at or after `start`, or -1."""
    raw = data.obj if isinstance(data.obj, bytes) and len(data.obj) == len(data) else bytes(data)
    at = raw.find(RECORD_MAGIC, start)
    while at >= 0:
        if _valid_at(data, at) >= 0:
            return at
        at = raw.find(RECORD_MAGIC, at + 1)
    return -1


def _last_torn_start(data: memoryview, start: int) -> int:
    """The first offset at or after `start` from which the rest could be one cut-short record, or -1."""
    for at in range(start, len(data)):
        if data[at] == RECORD_MAGIC[0] and _incomplete_at(data, at):
            return at
    return -1


def scan(data: bytes, base: int = 0, at_eof: bool = True) -> Iterator[Record | Corrupt | Torn]:
    """Records, skipped corrupt bytes and a torn tail, in file order; offsets are `base` + index.

    Every byte is covered by exactly one item when `at_eof`. Otherwise (more may be written, or the
    buffer is a window of the file) an incomplete or unresolved tail is left out: read on from the
    end of the last item."""
    view = memoryview(data)
    at = 0
    while at < len(view):
        end = _valid_at(view, at)
        if end >= 0:
            yield Record(base + at, base + end, bytes(view[at + RECORD_HEADER_BYTES:end]))
            at = end
            continue
        if not at_eof and _incomplete_at(view, at):
            return  # the rest of it is not written (or not read) yet
        following = _next_valid(view, at + 1)
        if following >= 0:
            yield Corrupt(base + at, base + following)
            at = following
            continue
        if not at_eof:
            return  # the next valid record may lie beyond this window
        torn = at if _incomplete_at(view, at) else _last_torn_start(view, at + 1)
        if torn > at:
            yield Corrupt(base + at, base + torn)
        if torn >= 0:
            yield Torn(base + torn, base + len(view))
        else:
            yield Corrupt(base + at, base + len(view))
        return


# -- the payload: one chunk --------------------------------------------------------------------
class _Spooled(msgspec.Struct, array_like=True, forbid_unknown_fields=False):
    container_id: str
    labels: dict[str, str]
    metadata: dict[str, str]
    tenant: str
    entries: list[Entry]
    nbytes: int
    position_kind: str  # "file", "stream" or "" (none)
    position: tuple[int, ...]


class _SpooledTuples(_Spooled, array_like=True, forbid_unknown_fields=False):
    """The same record, its entries decoded as plain tuples: the accelerator makes them entries at C
    speed (msgspec builds a NamedTuple through its Python-level __new__, ~1 µs a line)."""

    entries: list[tuple[int, str, str, dict[str, str] | None]]  # type: ignore[assignment]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Spooled if speedups is None else _SpooledTuples)


def encode_chunk(chunk: Chunk) -> bytes:
    origin, position = chunk.origin, chunk.position
    kind = "stream" if isinstance(position, StreamPosition) else "file" if isinstance(position, FilePosition) else ""
    return _encoder.encode(_Spooled(origin.container_id, origin.labels, origin.metadata, origin.tenant,
                                    chunk.entries, chunk.nbytes, kind, tuple(position) if position else ()))


def decode_chunk(payload: bytes) -> Chunk:
    """The chunk a record holds; msgspec.DecodeError/ValidationError if it is not one."""
    spooled = _decoder.decode(payload)
    position: Position | None = None
    if spooled.position_kind == "stream":
        position = StreamPosition(*spooled.position)
    elif spooled.position_kind == "file":
        position = FilePosition(*spooled.position)
    origin = Origin(spooled.container_id, spooled.labels, spooled.metadata, spooled.tenant)
    entries = spooled.entries if speedups is None else speedups.as_entries(spooled.entries, Entry)
    return Chunk(origin, entries, spooled.nbytes, position)
