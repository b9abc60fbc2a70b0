"""The Engine API log stream decoder, on bodies shaped exactly as this engine sends them."""

from __future__ import annotations

import random
import struct

from collector.pipeline.entry import StreamPosition
from collector.sources.apistream import PART_BYTES, RESUME_WINDOW_NS, StreamDecoder, since_param

T0 = "2026-11-23T15:22:09.063631450Z"
T0_NS = 1795447329063631450
WINDOW = (T0_NS // RESUME_WINDOW_NS - 1) * RESUME_WINDOW_NS  # where a stream of records near T0 resumes


def after(newest_offset: int, count: int) -> StreamPosition:
    """The position after `count` records in the resume window, the newest at T0 + newest_offset."""
    return StreamPosition(WINDOW, count, T0_NS + newest_offset)


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
    assert decoder.position == after(1, 2)


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
    assert decoder.position == after(4, 6)


def test_interleaved_part_holds_position_before_its_first_record() -> None:
    decoder = StreamDecoder(tty=False)
    entries = decoder.feed(frame(1, b"x\n", ts(1)) + frame(1, b"a" * PART_BYTES, ts(2)) + frame(2, b"e\n", ts(3)))
    assert [e.line for e in entries] == ["x", "e"]
    assert decoder.position == after(1, 1)
    entries = decoder.feed(frame(1, b"tail\n", ts(2)))
    assert len(entries[0].line) == PART_BYTES + 4
    assert decoder.position == after(3, 4)


def test_resume_skips_exactly_what_was_delivered_in_the_window() -> None:
    body = frame(1, b"a\n", ts(1)) + frame(1, b"b\n", ts(1)) + frame(1, b"c\n", ts(1)) + frame(1, b"d\n", ts(2))
    first = StreamDecoder(tty=False)
    first.feed(body[: len(frame(1, b"a\n", ts(1))) * 2])
    assert first.position == after(1, 2)
    # The next connection asks since=the window's start: Docker sends every record again.
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


# -- the many-frames-at-once path against the record-by-record one ------------------------------
# A decoder with `starts` set (multiline joining on) takes every record one by one: the reference.


def decode(body: bytes, cuts: list[int], *, one_by_one: bool, **options: object) -> tuple[list, StreamPosition, int]:
    decoder = StreamDecoder(tty=False, **options)  # type: ignore[arg-type]
    entries = []
    for start, stop in zip([0, *cuts], [*cuts, len(body)], strict=True):
        if one_by_one:
            decoder.starts = []
        entries += decoder.feed(body[start:stop])
        assert decoder.position == position_after(body[:stop], **options)
    entries += decoder.finish()
    return [(e.ts_ns, e.line, e.stream) for e in entries], decoder.position, decoder.stats.records


def position_after(prefix: bytes, **options: object) -> StreamPosition:
    reference = StreamDecoder(tty=False, **options)  # type: ignore[arg-type]
    reference.starts = []
    reference.feed(prefix)
    return reference.position


MIXED = b"".join([
    frame(1, b"first\n", ts(1)),  # the very first record always goes one by one
    frame(1, b"plain one\n", ts(2)),
    frame(2, b"an error\r\n", ts(2)),  # same timestamp on the other stream; CRLF ending
    frame(1, b"bad utf-8 \xe2\x82 and \xff\n", ts(3)),
    frame(1, b"a" * PART_BYTES, ts(4)),  # a 40 KiB line in three records
    frame(2, b"interleaved\n", ts(5)),
    frame(1, b"a" * PART_BYTES, ts(4)),
    frame(1, b"a" * 8192, ts(4)),
    frame(1, b"nul \x00\x00\x00 and a fake header \x01\x00\x00\x00\x00\x00\x00\x10" + T0.encode() + b" x\n", ts(6)),
    frame(1, b"b" * PART_BYTES, ts(7)),  # exactly 16 KiB: ended by an empty record
    frame(1, b"", ts(7)),
    frame(1, b"\n", ts(8)),  # an empty line
    frame(1, b"older than the newest\n", ts(7)),
    frame(1, b"lone cr\r\r\n", ts(9)),
    frame(1, b"last without newline", ts(10)),
])


def test_every_split_of_a_mixed_body_gives_the_record_by_record_result() -> None:
    expected = decode(MIXED, [], one_by_one=True)
    assert len(expected[0]) == 12 and expected[2] == 15
    assert expected[0][3][1] == "bad utf-8 \ufffd and \ufffd" and expected[0][2] == (T0_NS + 2, "an error", "stderr")
    assert decode(MIXED, [], one_by_one=False) == expected
    for cut in range(1, len(MIXED)):
        assert decode(MIXED, [cut], one_by_one=False) == expected, cut


def test_random_bodies_and_feeds_match_the_record_by_record_path() -> None:
    rng = random.Random(16)
    texts = [b"x", b"", b"\r", b"caf\xc3\xa9", b"\xe2\x82", b"\xff\xfe", b"\x00\x00\x00", b"\x01\x00\x00\x00\x00\x00\x00 ",
             T0.encode() + b" ", b"plain text of a line", b"\x0a"[:0]]
    for _ in range(150):
        records = []
        when = 1
        for _ in range(rng.randrange(1, 60)):
            when += rng.choice((0, 0, 1, 1, 2, -1))
            text = b"".join(rng.choice(texts) for _ in range(rng.randrange(0, 6)))
            shape = rng.random()
            if shape < 0.05:
                text = b"p" * PART_BYTES  # a part; the next record of its stream ends the line
            elif shape < 0.1:
                pass  # no newline: a whole line when no part precedes it
            else:
                text += rng.choice((b"\n", b"\r\n"))
            records.append(frame(rng.choice((1, 1, 2)), text, ts(max(when, 0))))
        body = b"".join(records)
        cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randrange(0, 6))))
        options = rng.choice(({}, {"max_line_bytes": 20}, {"resume_from": StreamPosition(T0_NS + 3, rng.randrange(0, 4))}))
        assert decode(body, cuts, one_by_one=False, **options) == decode(body, cuts, one_by_one=True, **options)


def test_resume_among_many_equal_timestamps_skips_exactly_the_delivered_count() -> None:
    body = frame(1, b"before\n", ts(1)) + b"".join(frame(1, b"same %d\n" % i, ts(2)) for i in range(50)) + b"".join(
        frame(1, b"after %d\n" % i, ts(3 + i)) for i in range(50))
    for delivered in (0, 1, 25, 50):
        decoder = StreamDecoder(tty=False, resume_from=StreamPosition(T0_NS + 2, delivered))
        lines = [e.line for e in decoder.feed(body)]
        assert lines == [f"same {i}" for i in range(delivered, 50)] + [f"after {i}" for i in range(50)]
        assert decoder.stats.skipped_on_resume == 1 + delivered
        # The window never starts before the `since` asked for: Docker sent nothing earlier.
        assert decoder.position == StreamPosition(T0_NS + 2, 100, T0_NS + 52) and not decoder.gap


def test_position_counts_every_record_in_the_window_across_chunks() -> None:
    decoder = StreamDecoder(tty=False)
    decoder.feed(frame(1, b"a\n", ts(1)) + frame(1, b"b\n", ts(5)) + frame(2, b"c\n", ts(5)) + frame(1, b"d\n", ts(4)))
    assert decoder.position == after(5, 4)
    decoder.feed(frame(2, b"e\n", ts(5)) + frame(1, b"f\n", ts(5)))
    assert decoder.position == after(5, 6)


def test_lines_over_the_limit_are_cut_as_before() -> None:
    body = frame(1, b"first\n", ts(1)) + frame(1, b"short\n", ts(2)) + frame(1, b"x" * 100 + b"\n", ts(3))
    decoder = StreamDecoder(tty=False, max_line_bytes=10)
    assert [e.line for e in decoder.feed(body)] == ["first", "short", "x" * 10]
    assert decoder.stats.truncated_lines == 1


def test_tty_body_split_at_every_offset_gives_the_same_entries() -> None:
    body = (f"{ts(1)} hello\r\n{ts(2)} two\r\n{ts(3)} ".encode() + b"a" * PART_BYTES + f"{ts(3)} ".encode()
            + b"rest\r" + f"{ts(4)} end".encode())
    whole = StreamDecoder(tty=True)
    expected = whole.feed(body) + whole.finish()
    for cut in range(1, len(body), 7):
        decoder = StreamDecoder(tty=True)
        assert decoder.feed(body[:cut]) + decoder.feed(body[cut:]) + decoder.finish() == expected, cut


def test_timestamps_with_other_characters_among_plain_frames_are_bad_records() -> None:
    good = [frame(1, b"line %d\n" % i, ts(i)) for i in range(1, 6)]
    bad_fraction = frame(1, b"bad fraction\n", "2026-11-23T15:22:09.06363 45Z")
    bad_second = frame(1, b"bad second\n", "2026-11-23T15:2x:09.063631450Z")
    decoder = StreamDecoder(tty=False)
    entries = decoder.feed(b"".join([*good[:2], bad_fraction, good[2], bad_second, *good[3:]]))
    assert [e.line for e in entries] == [f"line {i}" for i in range(1, 6)]
    assert decoder.stats.bad_records == 2 and decoder.stats.records == 5


# -- Docker's own error texts in the stream (issue 22 item 10) -----------------------------------
# dockerd writes `Error grabbing logs: <err>\n` into the body when its log reader fails (moby
# api/server/httputils/write_log_stream.go): in a frame of stream 3 (system error) when the
# stream is multiplexed, raw in a TTY container's body. It is not a record of the container.

GRAB_ERROR = b"Error grabbing logs: log message is too large\n"


def test_docker_error_frame_is_counted_and_never_a_line() -> None:
    system_error = bytes([3, 0, 0, 0]) + struct.pack(">I", len(GRAB_ERROR)) + GRAB_ERROR
    body = frame(1, b"before\n", ts(1)) + system_error + frame(2, b"after\n", ts(2))
    for cut in range(len(body) + 1):
        decoder = StreamDecoder(tty=False)
        lines = [e.line for e in decoder.feed(body[:cut]) + decoder.feed(body[cut:]) + decoder.finish()]
        assert lines == ["before", "after"], cut
        assert decoder.stats.bad_records == 0 and decoder.stats.docker_errors == 1
        assert decoder.stats.last_docker_error == "Error grabbing logs: log message is too large"
        assert decoder.position == after(2, 2)


def test_docker_error_text_in_a_tty_body_is_counted_and_never_a_line() -> None:
    body = f"{ts(1)} one\r\n".encode() + GRAB_ERROR + f"{ts(2)} two\r\n".encode()
    for cut in range(len(body) + 1):
        decoder = StreamDecoder(tty=True)
        lines = [e.line for e in decoder.feed(body[:cut]) + decoder.feed(body[cut:]) + decoder.finish()]
        assert lines == ["one", "two"], cut
        assert decoder.stats.bad_records == 0 and decoder.stats.docker_errors == 1
