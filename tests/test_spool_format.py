"""The spool's on-disk format (pure): segment header, records, and the scanner that reads them
back after a crash (a torn tail) or a bad disk (a corrupt record in the middle)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin, StreamPosition
from collector.spool.format import (
    HEADER_BYTES,
    Corrupt,
    Record,
    SegmentHeaderError,
    Torn,
    decode_chunk,
    encode_chunk,
    encode_record,
    parse_header,
    scan,
    segment_header,
)

BUDGET = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


A_POSITION = FilePosition(7, 100, 3)


def a_chunk(position: FilePosition | StreamPosition | None = A_POSITION) -> Chunk:
    origin = Origin("c1", {"container_name": "web"}, {"image": "busybox"}, tenant="t1")
    entries = [Entry(1, "one", "stdout"), Entry(2, "two", "stderr", {"k": "v"})]
    return Chunk(origin, entries, 42, position)


@pytest.mark.parametrize("position", [FilePosition(7, 100, 3), StreamPosition(10, 2, 12), None])
def test_a_chunk_round_trips_with_everything_needed_after_its_container_is_gone(position) -> None:
    chunk = decode_chunk(encode_chunk(a_chunk(position)))
    assert chunk.origin.container_id == "c1" and chunk.origin.labels == {"container_name": "web"}
    assert chunk.origin.metadata == {"image": "busybox"} and chunk.origin.tenant == "t1"
    assert chunk.entries == [Entry(1, "one", "stdout"), Entry(2, "two", "stderr", {"k": "v"})]
    assert chunk.nbytes == 42 and chunk.position == position and type(chunk.position) is type(position)


def test_header_carries_magic_and_version() -> None:
    header = segment_header(created_ns=123)
    assert len(header) == HEADER_BYTES
    assert parse_header(header) == 123
    with pytest.raises(SegmentHeaderError, match="not a spool segment"):
        parse_header(b"x" * HEADER_BYTES)
    with pytest.raises(SegmentHeaderError, match="version 99"):
        parse_header(header[:8] + struct.pack(">I", 99) + header[12:])
    with pytest.raises(SegmentHeaderError, match="short"):
        parse_header(header[:5])


def records(*payloads: bytes) -> bytes:
    return b"".join(encode_record(p) for p in payloads)


def test_scan_reads_every_record_with_its_offsets() -> None:
    data = records(b"a", b"bb", b"")
    found = list(scan(data, base=100))
    assert [r.payload for r in found] == [b"a", b"bb", b""]
    assert found[0].offset == 100 and found[0].end == found[1].offset and found[-1].end == 100 + len(data)


def test_a_torn_last_record_is_reported_as_torn_at_every_cut() -> None:
    whole = records(b"first", b"second record")
    last = len(encode_record(b"first"))
    for cut in range(last + 1, len(whole)):
        found = list(scan(whole[:cut]))
        assert found == [Record(0, last, b"first"), Torn(last, cut)], cut


def test_incomplete_tail_is_left_unread_when_more_may_come() -> None:
    whole = records(b"first", b"second")
    last = len(encode_record(b"first"))
    assert list(scan(whole[:-1], at_eof=False)) == [Record(0, last, b"first")]


def test_a_corrupt_byte_in_the_middle_skips_to_the_next_valid_record() -> None:
    parts = [encode_record(p) for p in (b"one", b"two" * 10, b"three")]
    data = bytearray(b"".join(parts))
    data[len(parts[0]) + 15] ^= 0xFF  # inside the second record's payload
    found = list(scan(bytes(data)))
    assert [type(f) for f in found] == [Record, Corrupt, Record]
    assert found[1] == Corrupt(len(parts[0]), len(parts[0]) + len(parts[1]))
    assert found[2].payload == b"three"


def test_a_corrupt_length_is_not_mistaken_for_a_torn_tail() -> None:
    parts = [encode_record(p) for p in (b"one", b"two", b"three")]
    data = bytearray(b"".join(parts))
    data[len(parts[0]) + 4:len(parts[0]) + 8] = struct.pack(">I", 10_000)  # points past the end
    found = list(scan(bytes(data)))
    assert [type(f) for f in found] == [Record, Corrupt, Record] and found[2].payload == b"three"


# -- property: any sequence of records, any corruption or truncation --------------------------
@st.composite
def damaged(draw) -> tuple[list[bytes], bytes, set[int], int]:
    """Payloads, the damaged file, the indexes of records left intact, and where the file was cut."""
    payloads = draw(st.lists(st.binary(max_size=40), max_size=10))
    parts = [encode_record(p) for p in payloads]
    data = bytearray(b"".join(parts))
    starts = [sum(map(len, parts[:i])) for i in range(len(parts))]
    flips = draw(st.lists(st.integers(0, max(0, len(data) - 1)), max_size=3)) if data else []
    for at in flips:
        data[at] ^= draw(st.integers(1, 255))
    cut = draw(st.integers(0, len(data)))
    data = data[:cut]
    intact = {i for i, start in enumerate(starts)
              if start + len(parts[i]) <= cut and not any(start <= at < start + len(parts[i]) for at in flips)}
    return payloads, bytes(data), intact, cut


@BUDGET
@given(damaged())
def test_scanner_on_random_damage_reads_every_intact_record_and_accounts_for_every_byte(case) -> None:
    payloads, data, intact, cut = case
    found = list(scan(data))
    # Every byte is accounted for exactly once, in order.
    position = 0
    for item in found:
        assert item.offset == position and item.end > item.offset
        position = item.end
    assert position == len(data)
    read = [item.payload for item in found if isinstance(item, Record)]
    # Every intact record is read (a random flip could forge a record only with a valid CRC: no).
    for index in sorted(intact):
        assert payloads[index] in read
    assert len(read) <= len(payloads)
    # Only the last item can be torn.
    assert all(not isinstance(item, Torn) for item in found[:-1])
