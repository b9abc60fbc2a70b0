"""Per-line processing: drop / keep / redact, fields from JSON and logfmt, timestamps from the
line, the rate limit (no Docker; a fake clock for the limit)."""

from __future__ import annotations

import msgspec

from collector.config import Config, decode_hook
from collector.pipeline.entry import Entry
from collector.transform.lines import ProcessingStats, TokenBucket, build_processor, json_fields, logfmt_fields

T = 1_795_372_655_000_000_000


def processing(**tree):
    return msgspec.convert({"processing": tree}, Config, dec_hook=decode_hook, strict=False).processing


def entries(*lines: str) -> list[Entry]:
    return [Entry(T + i, line, "stdout") for i, line in enumerate(lines)]


def test_nothing_configured_means_no_processor() -> None:
    assert build_processor(processing(), {}, ProcessingStats(), []) is None


def test_drop_keep_and_redact_count_per_rule() -> None:
    stats = ProcessingStats()
    processor = build_processor(processing(drop=["GET /healthz"], redact=[{"regex": r"password=\S+", "replacement": "password=***"}]),
                                {"collector.drop": "^DEBUG"}, stats, [])
    assert processor is not None
    out = processor.process(entries("GET /healthz 200", "login password=hunter2 ok", "DEBUG noise", "plain"))
    assert [e.line for e in out] == ["login password=*** ok", "plain"]
    assert stats.dropped == {"drop[0]": 1, "label collector.drop": 1}
    keep = build_processor(processing(keep=["ERROR", "WARN"]), {}, stats, [])
    assert keep is not None and [e.line for e in keep.process(entries("ERROR x", "INFO y", "WARN z"))] == ["ERROR x", "WARN z"]
    assert stats.dropped["keep"] == 1


def test_fields_from_json_and_logfmt_into_the_entry_metadata() -> None:
    wanted = frozenset({"level", "trace_id", "n"})
    assert json_fields('{"level":"error","trace_id":"abc","n":3,"msg":"x","nested":{"a":1}}', wanted) == {
        "level": "error", "trace_id": "abc", "n": "3"}
    assert json_fields("not json {", wanted) == {} and json_fields('{"broken":', wanted) == {}
    assert logfmt_fields('ts=1 level=warn msg="a b" trace_id="x \\"y\\""', wanted) == {"level": "warn", "trace_id": 'x "y"'}
    processor = build_processor(processing(parse="logfmt", fields=["level"]), {"collector.parse": "json"}, ProcessingStats(), [])
    assert processor is not None
    out = processor.process(entries('{"level":"info"}', "level=debug"))  # the container's label wins: json
    assert [e.attrs for e in out] == [{"level": "info"}, None]


def test_timestamp_from_the_line_or_dockers_when_it_does_not_parse() -> None:
    stats = ProcessingStats()
    processor = build_processor(processing(timestamp_format="%Y-%m-%d %H:%M:%S,%f"), {}, stats, [])
    assert processor is not None
    out = processor.process(entries("2026-01-02 03:04:05,250 INFO started", "no time here"))
    assert out[0].ts_ns == 1767323045_250_000_000 and out[1].ts_ns == T + 1
    assert stats.timestamp_fallbacks == 1
    rfc = build_processor(processing(), {"collector.timestamp_format": "rfc3339"}, stats, [])
    assert rfc is not None and rfc.process(entries("2026-01-02T03:04:05.5Z x"))[0].ts_ns == 1767323045_500_000_000


def test_rate_limit_with_a_burst_on_a_fake_clock() -> None:
    now = [0.0]
    bucket = TokenBucket(10, 0, 1.0, clock=lambda: now[0])
    assert sum(bucket.allow(5) for _ in range(25)) == 10  # the burst: one second's worth
    now[0] += 0.5
    assert sum(bucket.allow(5) for _ in range(25)) == 5
    by_bytes = TokenBucket(0, 100, 1.0, clock=lambda: now[0])
    assert [by_bytes.allow(60), by_bytes.allow(60)] == [True, False]


def test_bad_container_labels_are_reported_and_ignored() -> None:
    problems: list[str] = []
    processor = build_processor(processing(), {"collector.drop": "(", "collector.parse": "xml", "collector.rate_limit": "fast"},
                                ProcessingStats(), problems)
    assert processor is None and len(problems) == 3
