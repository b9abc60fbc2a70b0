"""Pure: Loki push bodies. Protobuf per Loki's push.proto (+ block snappy), or JSON. No I/O.

    PushRequest   { repeated StreamAdapter streams = 1; }
    StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
    EntryAdapter  { Timestamp timestamp = 1 (non-nullable); string line = 2;
                    repeated LabelPairAdapter structuredMetadata = 3; }
    LabelPairAdapter { string name = 1; string value = 2; }
    Timestamp     { int64 seconds = 1; int32 nanos = 2; }

Fields are written as Go's gogoproto writes them: in field order, zero scalars and empty strings
left out, the non-nullable timestamp always present.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import cramjam
import msgspec

from collector.speedups import speedups

Metadata = Sequence[tuple[str, str]]


class PushEntry(NamedTuple):
    """Any tuple whose first two items are (ts_ns, line) will do; the pipeline's Entry is one."""

    ts_ns: int
    line: str


class PushStream(NamedTuple):
    labels: str  # Loki's {k="v", ...} form, see label_string
    entries: Sequence[tuple]  # (ts_ns, line, ...) tuples
    metadata: Metadata = ()  # structured metadata, the same for every entry of this stream
    # Entries carry their own metadata too (a dict or None as their 4th item, e.g. fields
    # extracted from the line); the stream's metadata wins for a name in both.
    per_entry: bool = False


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _quote(value: str) -> str:
    if any(ch in value for ch in _ESCAPES):
        value = "".join(_ESCAPES.get(ch, ch) for ch in value)
    return f'"{value}"'


def label_string(labels: dict[str, str]) -> str:
    """`{a="1", b="x \\"y\\""}`: sorted by name, values quoted with Go escapes (what Loki parses)."""
    return "{" + ", ".join(f"{name}={_quote(labels[name])}" for name in sorted(labels)) + "}"


# Varints below 128 are one byte: precomputed, they are most tags and lengths.
_SMALL = [bytes([i]) for i in range(128)]


def _varint(value: int) -> bytes:
    if value < 0x80:
        if value >= 0:
            return _SMALL[value]
        value += 1 << 64  # int64 on the wire: two's complement in ten bytes
    elif value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    elif value < 0x200000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    elif value < 0x10000000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80, value >> 21))
    elif value < 0x800000000:  # nanoseconds (< 2^30) and seconds until 3058 land here
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80,
                      value >> 21 & 0x7F | 0x80, value >> 28))
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def encode_metadata(metadata: Metadata) -> bytes:
    """An entry's structuredMetadata fields (LabelPairAdapter, field 3), encoded once per stream."""
    pairs = []
    for name, value in metadata:
        body = (_field(b"\x0a", name.encode()) if name else b"") + (_field(b"\x12", value.encode()) if value else b"")
        pairs.append(_field(b"\x1a", body))
    return b"".join(pairs)


# Tables for the Python hot loop (about 3 MB, built on its first use: with the C accelerator it
# never runs): each entry is then a few list appends of ready-made bytes.
_TABLE = 1 << 14


@functools.cache
def _tables() -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Field 2 with a length (a stream's EntryAdapter, and an entry's line, share the tag); and for
    a nanosecond field of 2^14 or more (all but 16 µs of every second) its low 14 bits, seven to a
    byte with the continuation bit, then the varint of the rest (nanos >> 14): from the third table
    below 2^14, else 14 more bits the same way and one last byte. (One table of every rest would
    save an append per entry but hold 2.4 MB.)"""
    field2_head = [b"\x12" + _varint(n) for n in range(_TABLE)]
    low14 = [bytes((n & 0x7F | 0x80, n >> 7 | 0x80)) for n in range(_TABLE)]
    varint14 = [_varint(n) for n in range(_TABLE)]
    return field2_head, low14, varint14


def _stream_parts(stream: PushStream, out: bytearray) -> int:
    """Append a StreamAdapter's body to `out`; return its length. The hot loop: ready-made pieces
    copied into one buffer (each line's bytes are freed at once), each entry's length computed."""
    append = out.extend
    size = 0
    if stream.labels:
        head = _field(b"\x0a", stream.labels.encode())
        append(head)
        size += len(head)
    shared = encode_metadata(stream.metadata)
    if speedups is not None and not stream.per_entry:
        try:
            body = speedups.encode_entries(stream.entries, shared)
        except (OverflowError, TypeError):
            pass  # a time beyond int64, or not the usual entries: the Python loop below knows them
        else:
            append(body)
            return size + len(body)
    shared_names = {name for name, _ in stream.metadata}
    metadata, metadata_len = shared, len(shared)
    per_entry = stream.per_entry
    (field2_head, low14, varint14), small = _tables(), _SMALL
    last_seconds: int | None = None  # (no time is None: -1 s is a time too)
    seconds_field = b""
    ts_heads: list[bytes] = []  # by the nanos field's length: timestamp tag, its length, seconds, nanos tag
    ts_head_len = 0
    for entry in stream.entries:
        ts = entry[0]
        seconds = ts // 1_000_000_000
        nanos = ts - seconds * 1_000_000_000
        if seconds != last_seconds:  # lines of one second share this
            last_seconds = seconds
            seconds_field = b"\x08" + _varint(seconds) if seconds else b""
            ts_heads = [b"\x0a" + _SMALL[len(seconds_field) + 1 + n] + seconds_field + b"\x10" for n in range(6)]
            ts_head_len = len(ts_heads[0])
        raw = entry[1].encode()
        length = len(raw)
        if per_entry:
            own = entry[3]
            metadata = shared + encode_metadata([(k, v) for k, v in own.items() if k not in shared_names]) if own else shared
            metadata_len = len(metadata)
        high = nanos >> 14
        if high and 0 < length < _TABLE:
            # The usual entry: ready-made pieces only.
            if high < _TABLE:
                tail = varint14[high]
                last = b""
                nanos_len = 2 + len(tail)
            else:
                tail = low14[high & 0x3FFF]
                last = small[high >> 14]
                nanos_len = 5
            body_len = ts_head_len + nanos_len + 1 + (1 if length < 0x80 else 2) + length + metadata_len
            if body_len < _TABLE:
                head = field2_head[body_len]
                append(head)
                append(ts_heads[nanos_len])
                append(low14[nanos & 0x3FFF])
                append(tail)
                if last:
                    append(last)
                append(field2_head[length])
                append(raw)
                if metadata_len:
                    append(metadata)
                size += len(head) + body_len
                continue
        timestamp = seconds_field + b"\x10" + _varint(nanos) if nanos else seconds_field
        if length:
            line_head = b"\x12" + (_SMALL[length] if length < 0x80 else _varint(length))
            body_len = 2 + len(timestamp) + len(line_head) + length + metadata_len
        else:
            line_head = b""
            body_len = 2 + len(timestamp) + metadata_len
        head = b"\x12" + _varint(body_len) + b"\x0a" + _SMALL[len(timestamp)] + timestamp + line_head
        append(head)
        if length:
            append(raw)
        if metadata_len:
            append(metadata)
        size += len(head) + length + metadata_len
    return size


def encode_push_request(streams: Iterable[PushStream]) -> bytearray:
    """PushRequest protobuf (uncompressed), in one buffer: no list of parts, no join, no copy."""
    out = bytearray()
    for stream in streams:
        start = len(out)
        size = _stream_parts(stream, out)
        out[start:start] = b"\x0a" + _varint(size)  # its length is known once it is written
    return out


def snappy_block(data: bytes | bytearray) -> bytes:
    """Loki wants block (raw) snappy, not the framed format."""
    return bytes(cramjam.snappy.compress_raw(data))


def encode_json(streams: Iterable[PushStream], labels_of: dict[str, dict[str, str]]) -> bytes:
    """Loki's JSON push body; `labels_of` maps each stream's label string to its label map."""
    payload = []
    for stream in streams:
        if stream.per_entry:
            shared = dict(stream.metadata)
            values = [[str(entry[0]), entry[1], {**entry[3], **shared} if entry[3] else shared] if entry[3] or shared
                      else [str(entry[0]), entry[1]] for entry in stream.entries]
        elif stream.metadata:
            metadata = dict(stream.metadata)
            values = [[str(entry[0]), entry[1], metadata] for entry in stream.entries]
        else:
            values = [[str(entry[0]), entry[1]] for entry in stream.entries]
        payload.append({"stream": labels_of[stream.labels], "values": values})
    return msgspec.json.encode({"streams": payload})
