"""The C accelerator (collector/_speedups.c) against the pure-Python code it stands in for: same
entries, offsets and counts from any json-file bytes; the same protobuf bytes from any entries.
The Python code is the reference; the suite's other tests of these modules run once more without
the accelerator (COLLECTOR_NO_SPEEDUPS=1), so the fallback stays tested too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any
from unittest import mock

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import speedups as speedups_module
from collector.pipeline.entry import Chunk, Entry, Origin
from collector.sinks import lokiproto
from collector.sinks.lokiproto import PushStream, encode_push_request
from collector.sources import apistream, jsonfile
from collector.sources.apistream import StreamDecoder
from collector.sources.jsonfile import JsonFileParser
from collector.spool import format as spool_format

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_accelerator_is_built_where_a_compiler_was_at_install_time() -> None:
    # .ci/run and the image's build stage install gcc and python3-dev, so a missing module there is a
    # broken build, not the fallback.
    assert speedups_module.speedups is not None, "collector._speedups was not built (no compiler at install time?)"


def test_no_speedups_in_the_environment_chooses_the_python_code() -> None:
    code = "from collector.speedups import speedups; print(speedups is None)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "COLLECTOR_NO_SPEEDUPS": "1"},
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "True"


def test_the_other_tests_of_the_hot_loops_pass_on_the_python_fallback() -> None:
    tests = ["tests/test_jsonfile.py", "tests/test_apistream.py", "tests/test_lokiproto.py", "tests/test_lines.py", "tests/test_properties.py"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                            env={**os.environ, "COLLECTOR_NO_SPEEDUPS": "1"}, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


# ---- json-file records ----

log_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
good_times = st.builds(lambda second, digits, fraction: f"2026-11-22T12:37:{second:02d}" + (f".{fraction[:digits]}" if digits else "") + "Z",
                       st.integers(0, 59), st.integers(0, 9), st.from_regex(r"[0-9]{9}", fullmatch=True))
odd_times = st.sampled_from([
    "2026-11-22T12:37:12.123+01:00", "2026-02-30T00:00:00.5Z", "2024-02-29T23:59:59.999999999Z", "2023-02-29T00:00:00Z",
    "1969-12-31T23:59:59.1Z", "2026-11-22T24:00:00Z", "2026-11-22T12:37:60Z", "2026-11-22t12:37:12Z", "2026-11-22T12:37:12.Z",
    "2026-11-22T12:37:12.1234567890Z", "2026-11-22T12:37:12z", "", "garbage", "2026-13-01T00:00:00Z", "+026-11-22T12:37:12Z",
])


@st.composite
def a_record(draw: Any) -> bytes:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.sampled_from([b"", b"{", b"not json", b'{"log":1}', b'["log"]', b'{"log":"x\\q\\n","stream":"stdout","time":"t"}']))
    text = draw(log_text)
    ending = draw(st.sampled_from(["\n", "\n", "\n", "\r\n", ""]))  # "": a part of a split line, or a final one
    record: dict[str, Any] = {"log": text + ending, "stream": draw(st.sampled_from(["stdout", "stdout", "stderr", "other"]))}
    if draw(st.integers(0, 5)) == 0:
        record["attrs"] = draw(st.dictionaries(st.sampled_from(["tag", "env", "a\"b"]), log_text, max_size=2))
    record["time"] = draw(st.one_of(good_times, good_times, good_times, odd_times))
    if draw(st.integers(0, 9)) == 0:
        record = dict(reversed(list(record.items())))  # not dockerd's key order
    style = draw(st.integers(0, 2))
    if style == 0:
        raw = msgspec.json.encode(record)  # raw UTF-8, few escapes
    elif style == 1:
        raw = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode()  # \u escapes, surrogate pairs
    else:
        raw = json.dumps(record, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").encode()  # dockerd's escapes
    if draw(st.integers(0, 29)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]  # torn
    return raw


def _feed_all(chunks: list[bytes], max_line_bytes: int, accelerated: bool) -> tuple[list[Any], list[int], tuple[int, int, int, str]]:
    parser = JsonFileParser(max_line_bytes=max_line_bytes)
    entries: list[Any] = []
    resumes = []
    offset = 0
    with mock.patch.object(jsonfile, "speedups", speedups_module.speedups if accelerated else None):
        for chunk in chunks:
            got, resume = parser.feed(chunk, offset)
            entries += got
            resumes.append(resume)
            offset += len(chunk)
        entries += parser.flush()
    stats = parser.stats
    return [tuple(entry) for entry in entries], resumes, (stats.records, stats.bad_records, stats.truncated_lines, stats.last_error)


@settings(max_examples=400, deadline=None)
@given(st.lists(a_record(), max_size=15), st.sampled_from([16, 64, 256 * 1024]), st.data())
def test_json_file_records_give_what_the_python_parser_gives(records: list[bytes], max_line_bytes: int, data: Any) -> None:
    assert speedups_module.speedups is not None
    lines = [record + b"\n" for record in records]
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(lines)), max_size=4))))
    chunks = [b"".join(lines[start:end]) for start, end in zip([0, *cuts], [*cuts, len(lines)], strict=True) if end > start]
    assert _feed_all(chunks, max_line_bytes, accelerated=True) == _feed_all(chunks, max_line_bytes, accelerated=False)


def test_usual_records_become_entries_of_exact_times_and_text() -> None:
    data = (b'{"log":"caf\\u00e9 \\u003cok\\u003e \\"q\\"\\r\\n","stream":"stderr","attrs":{"tag":"x"},"time":"2026-11-22T12:37:12.7096Z"}\n'
            b'{"log":"two\\n","stream":"stdout","time":"1970-01-01T00:00:01Z"}\n')
    entries: list[Entry] = []
    assert speedups_module.speedups is not None
    position, count = speedups_module.speedups.scan_records(data, 0, 1024, entries, Entry)
    assert (position, count) == (len(data), 2)
    assert entries == [Entry(1795351032_709600000, 'café <ok> "q"', "stderr", None), Entry(1_000_000_000, "two", "stdout", None)]
    assert type(entries[0]) is Entry and entries[0].line == 'café <ok> "q"'


def test_the_scan_stops_at_the_first_record_it_leaves_to_python() -> None:
    usual = b'{"log":"a\\n","stream":"stdout","time":"2026-11-22T12:37:12.1Z"}\n'
    split = b'{"log":"part","stream":"stdout","time":"2026-11-22T12:37:12.2Z"}\n'
    entries: list[Entry] = []
    assert speedups_module.speedups is not None
    assert speedups_module.speedups.scan_records(usual + split + usual, 0, 1024, entries, Entry) == (len(usual), 1)
    assert speedups_module.speedups.scan_records(usual + split + usual, len(usual + split), 1024, entries, Entry) == (
        len(usual + split + usual), 1)


# ---- protobuf ----

entry_times = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2 * 10**18), st.sampled_from([0, 1, 10**9, -1, 2**64]))
entries_of = st.lists(st.tuples(entry_times, st.text(max_size=30), st.just("stdout"), st.none()), max_size=12)
metadata_of = st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=3)


def _encode(streams: list[PushStream], accelerated: bool) -> bytes:
    with mock.patch.object(lokiproto, "speedups", speedups_module.speedups if accelerated else None):
        try:
            return bytes(encode_push_request(streams))
        except UnicodeEncodeError:
            return b"refused"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), entries_of, metadata_of), max_size=4))
def test_protobuf_bodies_are_byte_identical_to_the_python_encoder(streams: list[tuple[str, list, list]]) -> None:
    pushes = [PushStream(labels, entries, tuple(metadata)) for labels, entries, metadata in streams]
    assert _encode(pushes, accelerated=True) == _encode(pushes, accelerated=False)


# ---- spool read-back ----

spooled_entries = st.lists(st.builds(Entry, st.integers(0, 2**62), st.text(max_size=20), st.sampled_from(["stdout", "stderr"]),
                                     st.one_of(st.none(), st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))),
                           max_size=10)


@settings(max_examples=200, deadline=None)
@given(spooled_entries)
def test_spooled_chunks_read_back_as_the_same_entries_either_way(entries: list[Entry]) -> None:
    payload = spool_format.encode_chunk(Chunk(Origin("c1", {"app": "x"}), entries, 123))
    accelerated = spool_format.decode_chunk(payload)
    with mock.patch.object(spool_format, "speedups", None), \
            mock.patch.object(spool_format, "_decoder", msgspec.msgpack.Decoder(spool_format._Spooled)):
        reference = spool_format.decode_chunk(payload)
    assert accelerated.entries == reference.entries == entries
    assert all(type(entry) is Entry for entry in accelerated.entries + reference.entries)


# ---- Engine API log stream frames ----

frame_times = st.one_of(
    st.builds(lambda s, f: f"2026-11-22T12:37:{s:02d}.{f}Z", st.integers(0, 59), st.from_regex(r"[0-9]{9}", fullmatch=True)),
    st.sampled_from(["2026-02-30T00:00:00.000000000Z", "1969-12-31T23:59:59.999999999Z", "2026-11-22T12:37:12.12345678xZ",
                     "2026-11-22T12:37:12,123456789Z", "2026-11-22 12:37:12.123456789Z", "2024-02-29T00:00:00.000000001Z"]))
frame_texts = st.one_of(st.text(max_size=20).map(str.encode), st.binary(max_size=20),
                        st.sampled_from([b"", b"\r", b"a\rb", b"\xff\xfe", b"caf\xc3", b"x" * 40]))


@st.composite
def a_frame(draw: Any) -> bytes:
    kind = draw(st.integers(0, 19))
    stamp = draw(frame_times).encode()
    text = draw(frame_texts)
    ending = draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"", b"\nmore\n"]))  # "": a part or a last line
    payload = stamp + b" " + text + ending
    stream = draw(st.sampled_from([1, 1, 2])) if kind else draw(st.sampled_from([0, 3, 7]))
    length = len(payload) if kind != 1 else len(payload) + draw(st.integers(-3, 3))  # a length that disagrees
    return bytes([stream, 0, 0, 0]) + length.to_bytes(4, "big") + payload


def _decode(chunks: list[bytes], max_line_bytes: int, accelerated: bool) -> tuple[list[tuple], Any, Any, bool]:
    decoder = StreamDecoder(tty=False, max_line_bytes=max_line_bytes)
    entries: list[tuple] = []
    with mock.patch.object(apistream, "speedups", speedups_module.speedups if accelerated else None):
        for chunk in chunks:
            entries += map(tuple, decoder.feed(chunk))
        cut = decoder.cut
        entries += map(tuple, decoder.finish())
    return entries, decoder.position, decoder.stats, cut


@settings(max_examples=400, deadline=None)
@given(st.lists(a_frame(), max_size=12), st.sampled_from([8, 32, 256 * 1024]), st.data())
def test_log_stream_frames_give_what_the_python_decoder_gives(frames: list[bytes], max_line_bytes: int, data: Any) -> None:
    body = b"".join(frames)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(body)), max_size=4))))
    chunks = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert _decode(chunks, max_line_bytes, accelerated=True) == _decode(chunks, max_line_bytes, accelerated=False)
