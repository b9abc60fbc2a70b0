"""Property-based tests (hypothesis) of the pure parts against simple reference models.

A fixed example budget, derandomized, so CI time and outcome are stable; later rewrites of a parser
are checked against the same references.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.config import Config, ConfigError, env_names, load_config
from collector.pipeline.entry import StreamPosition
from collector.sources.apistream import PART_BYTES, RESUME_WINDOW_NS, StreamDecoder, since_param
from collector.sources.jsonfile import JsonFileParser
from collector.timefmt import rfc3339_nano

BUDGET = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
BASE_S = 1_795_000_000

# -- shared: lines as a container writes them ------------------------------------------------
short_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30)
long_sizes = st.sampled_from([PART_BYTES - 1, PART_BYTES, PART_BYTES + 1, 2 * PART_BYTES, 40000])


@st.composite
def a_line(draw: Any, tty: bool = False) -> tuple[str, str, str]:
    """(stream, text without ending, ending: "\\n", "\\r\\n" or "" for a last line without newline)."""
    stream = "stdout" if tty else draw(st.sampled_from(["stdout", "stdout", "stderr"]))
    text = draw(short_text)
    if draw(st.integers(0, 9)) == 0:
        text = text + "x" * draw(long_sizes)
    return stream, text, draw(st.sampled_from(["\n", "\n", "\r\n"]))


def cuts_of(draw: Any, size: int) -> list[int]:
    return sorted(set(draw(st.lists(st.integers(0, size), max_size=6))))


# -- the json-file parser --------------------------------------------------------------------
@st.composite
def json_file(draw: Any) -> tuple[bytes, list[tuple[int, str, str]], int]:
    """A json-file log as Docker writes it, the entries it holds, and how many corrupt records it has."""
    lines = draw(st.lists(a_line(), max_size=12))
    finals = {stream: draw(st.booleans()) for stream in ("stdout", "stderr")}
    records: list[tuple[str, bytes]] = []  # (stream, record)
    expected: list[tuple[int, str, str]] = []
    final_entries: list[tuple[int, str, str]] = []
    second = BASE_S
    for index, (stream, text, ending) in enumerate(lines):
        second += draw(st.integers(0, 2))
        digits = draw(st.integers(0, 9))
        fraction = "".join(draw(st.sampled_from("0123456789")) for _ in range(digits)).rstrip("0") if digits else ""
        stamp = rfc3339_nano(second * 10**9)[:19] + (f".{fraction}" if fraction else "") + "Z"
        ts_ns = second * 10**9 + (int(fraction.ljust(9, "0")) if fraction else 0)
        last_of_stream = all(other[0] != stream for other in lines[index + 1 :])
        if last_of_stream and finals[stream] and len(text) < PART_BYTES:
            ending = ""  # the process exited mid-line: delivered at the end
        whole = text + ending
        parts = [whole[i : i + PART_BYTES] for i in range(0, len(whole), PART_BYTES)] or [""]
        if parts[-1] in ("\n", "\r\n") and len(parts) > 1:
            parts[-2:] = [parts[-2] + parts[-1]]
        # Corrupt records come between lines: one between the parts of a line would end it (another time).
        records.append(("", b""))
        for part in parts:
            records.append((stream, (json.dumps({"log": part, "stream": stream, "time": stamp}) + "\n").encode()))
        (final_entries if not ending else expected).append((ts_ns, text, stream))
    corrupt = [b"{not json", b'{"log":', b"\xff\xfe garbage", b'{"log":"x\\n","stream":"stdout","time":"yesterday"}']
    bad = 0
    out: list[bytes] = []
    for stream, record in records:
        if not stream and draw(st.integers(0, 4)) == 0:
            out.append(draw(st.sampled_from(corrupt)) + b"\n")
            bad += 1
        out.append(record)
    # Lines without newline come last: at the end of input.
    return b"".join(out), expected + final_entries, bad


@BUDGET
@given(json_file(), st.data())
def test_jsonfile_parser_matches_the_reference_however_the_file_is_read(log: tuple[bytes, list, int], data: Any) -> None:
    body, expected, bad = log
    parser = JsonFileParser()
    entries = []
    carry = b""
    fed = 0
    # Read as a tailer does: chunks cut anywhere, whole records handed to the parser.
    cuts = cuts_of(data.draw, len(body))
    for start, stop in zip([0, *cuts], [*cuts, len(body)], strict=True):
        chunk = carry + body[start:stop] if start < stop else carry
        whole = chunk[: chunk.rfind(b"\n") + 1]
        carry = chunk[len(whole) :]
        got, resume = parser.feed(whole, fed)
        fed += len(whole)
        assert resume <= fed
        entries += got
    got, resume = parser.feed(carry, fed)
    entries += got + parser.flush()
    produced = sorted((e.ts_ns, e.line, e.stream) for e in entries)
    assert produced == sorted(expected)
    assert parser.stats.bad_records == bad
    # Each stream's entries in file order.
    for stream in ("stdout", "stderr"):
        assert [e.line for e in entries if e.stream == stream] == [e[1] for e in expected if e[2] == stream]


# -- the API stream decoder -----------------------------------------------------------------
@st.composite
def api_body(draw: Any, tty: bool) -> tuple[bytes, list[tuple[int, str, str]]]:
    """A logs body as dockerd sends it (timestamps=1) and the entries it holds, in completion order."""
    lines = draw(st.lists(a_line(tty), max_size=10))
    records: list[tuple[int, int, bytes]] = []  # (stream byte, ts_ns, text)
    expected: list[tuple[int, str, str]] = []
    ts_ns = BASE_S * 10**9
    for index, (stream, text, ending) in enumerate(lines):
        ts_ns += draw(st.integers(-5, 1_000_000))
        raw = text.encode()
        last = index == len(lines) - 1
        if last and draw(st.booleans()) and len(raw) < PART_BYTES:
            ending = ""  # a last line without newline
        byte = 1 if stream == "stdout" else 2
        if len(raw) >= PART_BYTES and not tty:
            parts = [raw[i : i + PART_BYTES] for i in range(0, len(raw), PART_BYTES)]
            if len(parts[-1]) == PART_BYTES:
                parts.append(b"")  # the final part never carries the newline: an empty record ends it
            records += [(byte, ts_ns, part) for part in parts]
        elif tty and len(raw + ending.encode()) > PART_BYTES:
            # TTY: Docker's 16 KiB buffer splits the output with its line ending; a short last part
            # loses its \n and is glued to the next record's timestamp.
            full = raw + ending.encode()
            parts = [full[i : i + PART_BYTES] for i in range(0, len(full), PART_BYTES)]
            if len(parts[-1]) < PART_BYTES:
                parts[-1] = parts[-1].removesuffix(b"\n")
            records += [(byte, ts_ns, part) for part in parts]
        else:
            records.append((byte, ts_ns, raw + ending.encode()))
        expected.append((ts_ns, text, stream))
    if tty:
        body = b"".join(rfc3339_nano(at).encode() + b" " + text for _, at, text in records)
    else:
        body = b"".join(bytes([byte, 0, 0, 0]) + struct.pack(">I", 31 + len(text)) + rfc3339_nano(at).encode() + b" " + text
                        for byte, at, text in records)
    return body, expected


def decode_in_pieces(body: bytes, cuts: list[int], tty: bool) -> list[tuple[int, str, str]]:
    decoder = StreamDecoder(tty=tty)
    entries = []
    for start, stop in zip([0, *cuts], [*cuts, len(body)], strict=True):
        entries += decoder.feed(body[start:stop])
    entries += decoder.finish()
    assert decoder.stats.bad_records == 0, decoder.stats.last_error
    return [(e.ts_ns, e.line, e.stream) for e in entries]


def reference_lines(expected: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    return expected  # the texts are valid UTF-8 without \r or \n: each line comes back as written


@BUDGET
@given(api_body(tty=False), st.data())
def test_api_stream_frames_match_the_reference_split_anywhere(body_and_lines: tuple[bytes, list], data: Any) -> None:
    body, expected = body_and_lines
    got = decode_in_pieces(body, cuts_of(data.draw, len(body)), tty=False)
    for stream in ("stdout", "stderr"):
        assert [e for e in got if e[2] == stream] == [e for e in reference_lines(expected) if e[2] == stream]


@BUDGET
@given(api_body(tty=True), st.data())
def test_api_stream_tty_matches_the_reference_split_anywhere(body_and_lines: tuple[bytes, list], data: Any) -> None:
    body, expected = body_and_lines
    assert decode_in_pieces(body, cuts_of(data.draw, len(body)), tty=True) == reference_lines(expected)


@BUDGET
@given(st.binary(max_size=300), st.booleans(), st.data())
def test_api_stream_decoder_never_raises_on_corrupt_bodies(body: bytes, tty: bool, data: Any) -> None:
    decoder = StreamDecoder(tty=tty, max_line_bytes=64)
    cuts = cuts_of(data.draw, len(body))
    for start, stop in zip([0, *cuts], [*cuts, len(body)], strict=True):
        decoder.feed(body[start:stop])
    decoder.finish()
    assert decoder.buffered == 0


@BUDGET
@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.integers(-RESUME_WINDOW_NS, 10**9)), min_size=1, max_size=25),
       st.integers(0, 25), st.sampled_from(["filter", "seek"]))
def test_api_stream_resume_loses_no_record_stamped_within_the_window(steps: list, cut: int, how: str) -> None:
    """Records out of order by up to the window: a reconnect after any record loses none of them."""
    records, newest = [], BASE_S * 10**9
    for index, (byte, step) in enumerate(steps):
        at = newest + step
        newest = max(newest, at)
        records.append((byte, at, f"r{index}"))

    def body(since_ns: int, upto: int) -> bytes:
        chosen = records[:upto]
        if how == "filter":
            chosen = [r for r in chosen if r[1] >= since_ns]
        else:
            first = next((i for i, r in enumerate(chosen) if r[1] >= since_ns), len(chosen))
            chosen = chosen[first:]
        return b"".join(bytes([b, 0, 0, 0]) + struct.pack(">I", 31 + len(t) + 1) + rfc3339_nano(at).encode() + b" " + t.encode() + b"\n"
                        for b, at, t in chosen)

    first = StreamDecoder(tty=False)
    seen = [e.line for e in first.feed(body(0, min(cut, len(records))))]
    position: StreamPosition = first.position
    seconds, nanos = since_param(position).split(".")
    second = StreamDecoder(tty=False, resume_from=position)
    seen += [e.line for e in second.feed(body(int(seconds) * 10**9 + int(nanos), len(records)))]
    assert set(seen) == {text for _, _, text in records}
    if how == "filter":
        assert sorted(seen) == sorted(text for _, _, text in records)  # and none twice


# -- the config loader ----------------------------------------------------------------------
KNOWN_ENV = env_names(Config)
env_value = st.one_of(st.sampled_from(["", "0", "1", "-1", "true", "no", "5s", "1h", "32MiB", "[1]", "{}", '{"a": "b"}',
                                       "http://l:3100/loki/api/v1/push", "xml", "auto", "stream", "all", "end"]),
                      st.text(max_size=12))
env_key = st.one_of(st.sampled_from(KNOWN_ENV),
                    st.builds(lambda a, b: f"COLLECTOR_{a}__{b}", st.from_regex(r"[A-Z_]{1,8}", fullmatch=True),
                              st.from_regex(r"[A-Z_]{1,8}", fullmatch=True)),
                    st.from_regex(r"COLLECTOR_[A-Za-z0-9_]{0,12}", fullmatch=True))


def _dotted(name: str) -> str:
    return name.removeprefix("COLLECTOR_").lower().replace("__", ".")


@BUDGET
@given(st.dictionaries(env_key, env_value, max_size=4))
def test_config_from_random_env_is_a_config_or_an_error_naming_a_key(environ: dict[str, str]) -> None:
    try:
        config = load_config(None, environ)
    except ConfigError as err:
        message = str(err)
        assert message.strip(), environ
        # It names a variable given, or its key as a dotted path (or its section, e.g. the label budget).
        named = [name for name in environ if name in message or _dotted(name).split(".")[0] in message]
        assert named or "label" in message, (environ, message)
    else:
        assert isinstance(config, Config)


yaml_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**7), st.text(max_size=10),
                        st.sampled_from(["5s", "1MiB", "http://loki:3100/loki/api/v1/push", "protobuf", "(a"]))
yaml_key = st.one_of(st.sampled_from(sorted({part for name in KNOWN_ENV for part in _dotted(name).split(".")})), st.text(max_size=8))
yaml_tree = st.recursive(yaml_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                st.dictionaries(yaml_key, inner, max_size=4)), max_leaves=12)


@BUDGET
@given(st.one_of(st.dictionaries(yaml_key, yaml_tree, max_size=5).map(lambda tree: yaml.safe_dump(tree)),
                 st.text(max_size=60)))
def test_config_from_random_yaml_is_a_config_or_a_clear_error(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(text)
    try:
        config = load_config(str(path), {})
    except ConfigError as err:
        assert str(err).strip() and "Traceback" not in str(err)
    else:
        assert isinstance(config, Config)
