"""The json-file parser, as a pure function of its input."""

from __future__ import annotations

import json

import pytest

from collector.pipeline.entry import Entry
from collector.sources.jsonfile import JsonFileParser
from collector.timefmt import BadTimestamp, parse_timestamp

T = "2026-11-22T12:37:12.709634378Z"
T_NS = 1795351032709634378


def rec(log: str, stream: str = "stdout", time: str = T, **extra: object) -> bytes:
    return json.dumps({"log": log, "stream": stream, "time": time, **extra}).encode() + b"\n"


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("2026-11-22T12:37:12Z", 0),
        ("2026-11-22T12:37:12.7Z", 700000000),
        ("2026-11-22T12:37:12.70Z", 700000000),
        ("2026-11-22T12:37:12.709Z", 709000000),
        ("2026-11-22T12:37:12.7096Z", 709600000),
        ("2026-11-22T12:37:12.70963Z", 709630000),
        ("2026-11-22T12:37:12.709634Z", 709634000),
        ("2026-11-22T12:37:12.7096343Z", 709634300),
        ("2026-11-22T12:37:12.70963437Z", 709634370),
        ("2026-11-22T12:37:12.709634378Z", 709634378),
        ("2026-11-22T12:37:12.000000001Z", 1),
    ],
)
def test_fractions_of_one_to_nine_digits_are_exact(text: str, nanos: int) -> None:
    assert parse_timestamp(text) == 1795351032 * 10**9 + nanos


def test_zone_offsets() -> None:
    assert parse_timestamp("2026-11-22T13:37:12.5+01:00") == 1795351032 * 10**9 + 500000000
    assert parse_timestamp("2026-11-22T11:07:12-01:30") == 1795351032 * 10**9


@pytest.mark.parametrize("text", ["", "yesterday", "2026-11-22 12:37:12Z", "2026-11-22T12:37:12.Z", "2026-11-22T12:37:12.1234567890Z", "2026-11-22T12:37:12"])
def test_bad_timestamps(text: str) -> None:
    with pytest.raises(BadTimestamp):
        parse_timestamp(text)


def test_lines_lose_newline_and_carriage_return() -> None:
    data = rec("plain\n") + rec("tty\r\n", "stdout") + rec("err\n", "stderr")
    entries, resume = JsonFileParser().feed(data, 100)
    assert entries == [Entry(T_NS, "plain", "stdout"), Entry(T_NS, "tty", "stdout"), Entry(T_NS, "err", "stderr")]
    assert resume == 100 + len(data)


def test_split_parts_join_into_one_entry_even_across_chunks() -> None:
    parser = JsonFileParser()
    first = rec("a" * 16384) + rec("b" * 16384)
    entries, resume = parser.feed(first, 0)
    assert entries == [] and resume == 0  # resume stays before the unfinished line
    other = rec("other stream\n", "stderr", time="2026-11-22T12:37:13Z")
    last = rec("c" * 10 + "\n")
    entries, resume = parser.feed(other + last, len(first))
    assert [(e.stream, e.line) for e in entries] == [("stderr", "other stream"), ("stdout", "a" * 16384 + "b" * 16384 + "c" * 10)]
    assert resume == len(first) + len(other) + len(last)


def test_record_without_newline_that_is_not_a_part_is_a_final_line() -> None:
    parser = JsonFileParser()
    entries, _ = parser.feed(rec("exited mid-line"), 0)
    assert entries == []  # could still be a part: wait for the next record or the drain
    entries, _ = parser.feed(rec("next run\n", time="2026-11-22T12:40:00Z"), 10)
    assert [e.line for e in entries] == ["exited mid-line", "next run"]
    parser.feed(rec("last words"), 20)
    assert [e.line for e in parser.flush()] == ["last words"]


def test_attrs_are_not_copied_into_every_entry() -> None:
    """They are the same for every record of a container: the registry takes them from the inspect."""
    entries, _ = JsonFileParser().feed(rec("x\n", attrs={"tag": "web", "env": "prod"}), 0)
    assert entries == [Entry(T_NS, "x", "stdout")]


def test_bad_json_is_counted_and_the_rest_delivered() -> None:
    parser = JsonFileParser()
    data = rec("good 1\n") + b'{"log":"trunc\n' + b"\x00\xff garbage\n" + rec("good 2\n") + rec("bad time\n", time="nope")
    entries, resume = parser.feed(data, 0)
    assert [e.line for e in entries] == ["good 1", "good 2"]
    assert parser.stats.bad_records == 3
    assert resume == len(data)


def test_endless_line_is_cut_and_memory_stays_bounded() -> None:
    parser = JsonFileParser(max_line_bytes=64 * 1024)
    for index in range(100):  # 1.6 MB of parts of one line
        parser.feed(rec("z" * 16384), index)
    pending = parser._pending["stdout"]
    assert pending.truncated and sum(len(p) for p in pending.parts) == 64 * 1024
    entries, _ = parser.feed(rec("end\n"), 1000)
    assert [len(e.line) for e in entries] == [64 * 1024]
    assert parser.stats.truncated_lines == 1


def test_times_of_every_fraction_length_and_second_in_one_chunk() -> None:
    """Docker drops a fraction's trailing zeros; the chunk loop's shortcut must agree with parse_timestamp."""
    times = ["2026-11-22T12:37:12.709634378Z", "2026-11-22T12:37:12.70963437Z", "2026-11-22T12:37:12.7Z",
             "2026-11-22T12:37:12Z", "2026-11-22T12:37:13.05Z", "2026-11-22T12:37:13.000000001Z",
             "2026-11-22T13:37:13.5+01:00", "2026-11-22T12:37:14.123456Z", "2026-11-22T12:37:14.12345678Z"]
    data = b"".join(rec(f"l{i}\n", "stdout", time) for i, time in enumerate(times))
    entries, _ = JsonFileParser().feed(data, 0)
    assert [entry.ts_ns for entry in entries] == [parse_timestamp(time) for time in times]
    assert [entry.line for entry in entries] == [f"l{i}" for i in range(len(times))]
