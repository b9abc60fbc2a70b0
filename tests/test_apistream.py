"""The Engine API log stream decoder, on bodies shaped exactly as this engine sends them."""

from __future__ import annotations

import struct

from collector.pipeline.entry import StreamPosition
from collector.sources.apistream import PART_BYTES, StreamDecoder, since_param

T0 = "2026-11-23T15:22:09.063631450Z"
T0_NS = 1795447329063631450


def ts(offset_ns: int) -> str:
    nanos = 63631450 + offset_ns
    return f"2026-11-23T15:22:09.{nanos:09d}Z"


def frame(stream: int, text: bytes, at: str = T0) -> bytes:
    payload = at.encode() + b" " + text
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


def test_frames_stdout_stderr_exact_timestamps() -> None:
    decoder = StreamDecoder(tty=False)
    entries = decoder.feed(frame(2, b"err\n", ts(0)) + frame(1, b"hello\n", ts(1)))
    assert [(e.ts_ns, e.line, e.stream) for e in entries] == [(T0_NS, "err", "stderr"), (T0_NS + 1, "hello", "stdout")]
    assert decoder.position == StreamPosition(T0_NS + 1, 1)


def test_frames_split_across_feeds() -> None:
    body = frame(1, b"one\n") + frame(1, b"two\r\n", ts(5))
    decoder = StreamDecoder(tty=False)
    lines = []
    for i in range(len(body)):
        lines += [e.line for e in decoder.feed(body[i : i + 1])]
    assert lines == ["one", "two"]


def test_forty_kib_line_and_exact_16k_line_are_one_entry_each() -> None:
    # As seen: 16384 + 16384 + 8192 (the last part without newline); 16384 + an empty record.
    big = [frame(1, b"a" * PART_BYTES, ts(2)), frame(1, b"a" * PART_BYTES, ts(2)), frame(1, b"a" * 8192, ts(2))]
    exact = [frame(1, b"b" * PART_BYTES, ts(3)), frame(1, b"", ts(3))]
    decoder = StreamDecoder(tty=False)
    entries = decoder.feed(b"".join(big[:2]))
    assert entries == [] and decoder.position == StreamPosition(0, 0)  # never past an open line
    entries = decoder.feed(big[2] + b"".join(exact) + frame(1, b"last", ts(4)))
    assert [(len(e.line), e.line[:1]) for e in entries] == [(40960, "a"), (16384, "b"), (4, "l")]
    assert entries[0].ts_ns == T0_NS + 2
    assert decoder.position == StreamPosition(T0_NS + 4, 1)


def test_interleaved_part_holds_position_before_its_first_record() -> None:
    decoder = StreamDecoder(tty=False)
    entries = decoder.feed(frame(1, b"x\n", ts(1)) + frame(1, b"a" * PART_BYTES, ts(2)) + frame(2, b"e\n", ts(3)))
    assert [e.line for e in entries] == ["x", "e"]
    assert decoder.position == StreamPosition(T0_NS + 1, 1)
    entries = decoder.feed(frame(1, b"tail\n", ts(2)))
    assert len(entries[0].line) == PART_BYTES + 4
    assert decoder.position == StreamPosition(T0_NS + 3, 1)


def test_resume_skips_exactly_what_was_delivered_at_the_timestamp() -> None:
    body = frame(1, b"a\n", ts(1)) + frame(1, b"b\n", ts(1)) + frame(1, b"c\n", ts(1)) + frame(1, b"d\n", ts(2))
    first = StreamDecoder(tty=False)
    first.feed(body[: len(frame(1, b"a\n", ts(1))) * 2])
    assert first.position == StreamPosition(T0_NS + 1, 2)
    # The next connection asks since=that timestamp: Docker sends all three records at it again.
    second = StreamDecoder(tty=False, resume_from=first.position)
    assert [e.line for e in second.feed(body)] == ["c", "d"]
    assert not second.gap and second.stats.skipped_on_resume == 2


def test_gap_when_docker_rotated_past_since() -> None:
    decoder = StreamDecoder(tty=False, resume_from=StreamPosition(T0_NS + 1, 3))
    assert [e.line for e in decoder.feed(frame(1, b"later\n", ts(9)))] == ["later"]
    assert decoder.gap


def test_short_record_without_newline_is_a_line() -> None:
    decoder = StreamDecoder(tty=False)
    assert [e.line for e in decoder.feed(frame(1, b"no newline", ts(1)))] == ["no newline"]


def test_endless_line_is_cut_and_counted_with_bounded_memory() -> None:
    decoder = StreamDecoder(tty=False, max_line_bytes=40000)
    for _ in range(20):
        assert decoder.feed(frame(1, b"z" * PART_BYTES, ts(1))) == []
        assert decoder.buffered <= 40000 + PART_BYTES
    entries = decoder.feed(frame(1, b"end\n", ts(1)))
    assert len(entries[0].line) == 40000 and decoder.stats.truncated_lines == 1


def test_tty_lines_and_glued_timestamp_at_16k() -> None:
    # As seen from a TTY container: CRLF lines; a 20000-byte line is 16384 bytes, then the rest
    # (ending in a lone \r) glued to the next record's timestamp; a last line without newline.
    long_rest = b"a" * (20000 - PART_BYTES) + b"\r"
    body = (
        f"{ts(1)} hello\r\n{ts(2)} two\r\n{ts(3)} ".encode() + b"a" * PART_BYTES
        + f"{ts(3)} ".encode() + long_rest + f"{ts(4)} end".encode()
    )
    decoder = StreamDecoder(tty=True)
    entries = decoder.feed(body[:100]) + decoder.feed(body[100:]) + decoder.finish()
    assert [(e.line[:5], len(e.line)) for e in entries] == [("hello", 5), ("two", 3), ("aaaaa", 20000), ("end", 3)]
    assert all(e.stream == "stdout" for e in entries)
    assert entries[2].ts_ns == T0_NS + 3


def test_bad_timestamp_is_counted_not_fatal() -> None:
    decoder = StreamDecoder(tty=False)
    payload = b"garbage here\n"
    entries = decoder.feed(bytes([1, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload + frame(1, b"ok\n"))
    assert [e.line for e in entries] == ["ok"] and decoder.stats.bad_records == 1


def test_since_param_is_inclusive_nanoseconds_zero_padded() -> None:
    assert since_param(StreamPosition(1_000_000_000 * 5 + 42, 1)) == "5.000000042"
