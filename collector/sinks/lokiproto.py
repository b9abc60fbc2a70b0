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

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import cramjam
import msgspec

Metadata = Sequence[tuple[str, str]]


class PushEntry(NamedTuple):
    ts_ns: int
    line: str
    metadata: Metadata = ()


class PushStream(NamedTuple):
    labels: str  # Loki's {k="v", ...} form, see label_string
    entries: list[PushEntry]


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _quote(value: str) -> str:
    if any(ch in value for ch in _ESCAPES):
        value = "".join(_ESCAPES.get(ch, ch) for ch in value)
    return f'"{value}"'


def label_string(labels: dict[str, str]) -> str:
    """`{a="1", b="x \\"y\\""}`: sorted by name, values quoted with Go escapes (what Loki parses)."""
    return "{" + ", ".join(f"{name}={_quote(labels[name])}" for name in sorted(labels)) + "}"


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 on the wire: two's complement in ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Varints below 128 are one byte: precompute, they are most lengths and tags.
_SMALL = [bytes([i]) for i in range(128)]


def _len_prefix(payload: bytes | bytearray) -> bytes:
    n = len(payload)
    return _SMALL[n] if n < 128 else _varint(n)


def _label_pair(name: str, value: str) -> bytes:
    body = bytearray()
    if name:
        raw = name.encode()
        body += b"\x0a" + _len_prefix(raw) + raw
    if value:
        raw = value.encode()
        body += b"\x12" + _len_prefix(raw) + raw
    return b"\x1a" + _len_prefix(body) + bytes(body)


def encode_metadata(metadata: Metadata) -> bytes:
    """The structuredMetadata fields of an entry, encoded once and reused for every entry with them."""
    return b"".join(_label_pair(name, value) for name, value in metadata)


def _entry(ts_ns: int, line: str, metadata_bytes: bytes) -> bytes:
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    timestamp = (b"\x08" + _varint(seconds) if seconds else b"") + (b"\x10" + _varint(nanos) if nanos else b"")
    body = bytearray(b"\x0a")
    body += _len_prefix(timestamp)
    body += timestamp
    if line:
        raw = line.encode()
        body += b"\x12"
        body += _len_prefix(raw)
        body += raw
    body += metadata_bytes
    return b"\x12" + _len_prefix(body) + bytes(body)


def encode_push_request(streams: Iterable[PushStream]) -> bytes:
    """PushRequest protobuf (uncompressed)."""
    out = bytearray()
    metadata_cache: dict[tuple[tuple[str, str], ...], bytes] = {}
    for stream in streams:
        body = bytearray()
        if stream.labels:
            raw = stream.labels.encode()
            body += b"\x0a" + _len_prefix(raw) + raw
        for entry in stream.entries:
            key = tuple(entry.metadata)
            metadata_bytes = metadata_cache.get(key)
            if metadata_bytes is None:
                metadata_bytes = metadata_cache[key] = encode_metadata(key)
            body += _entry(entry.ts_ns, entry.line, metadata_bytes)
        out += b"\x0a" + _len_prefix(body) + body
    return bytes(out)


def snappy_block(data: bytes) -> bytes:
    """Loki wants block (raw) snappy, not the framed format."""
    return bytes(cramjam.snappy.compress_raw(data))


def encode_json(streams: Iterable[PushStream], labels_of: dict[str, dict[str, str]]) -> bytes:
    """Loki's JSON push body; `labels_of` maps each stream's label string to its label map."""
    payload = {
        "streams": [
            {
                "stream": labels_of[stream.labels],
                "values": [
                    [str(e.ts_ns), e.line, dict(e.metadata)] if e.metadata else [str(e.ts_ns), e.line]
                    for e in stream.entries
                ],
            }
            for stream in streams
        ]
    }
    return msgspec.json.encode(payload)
