"""Properties of the Loki answer interpreter (hypothesis, fixed budget): any status and body gives a
verdict and never an exception; Loki's own bodies, built as its code builds them for random
streams and entries, read back exactly (labels, ignored counts and timestamps, the rate)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from loki_receiver import RawEntry, format_labels, stream_limit_body, stream_rate_limit_body

from collector.sinks.answer import SHARD_LABEL, Action, interpret, matching, parse_labels

BUDGET = settings(max_examples=200, deadline=None, derandomize=True)
T0 = 1_763_900_000_000_000_000

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)
label_values = st.text(min_size=1, max_size=20)
label_sets = st.dictionaries(label_names, label_values, min_size=1, max_size=6)


@BUDGET
@given(st.integers(min_value=0, max_value=999), st.text(max_size=400))
def test_any_answer_gives_a_verdict(status: int, body: str) -> None:
    verdict = interpret(status, body)
    assert isinstance(verdict.action, Action)
    if status in (200, 204) and "ingestion blocked" not in body:
        assert verdict.action is Action.STORED
    if 500 <= status and "ingestion blocked" not in body:
        assert verdict.action is Action.RETRY


@BUDGET
@given(label_sets, st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=30),
       st.integers(min_value=1, max_value=4096).map(lambda kb: kb * 1024), st.booleans())
def test_per_stream_429_bodies_read_back_exactly(labels: dict[str, str], offsets: list[int], limit: int, shard: bool) -> None:
    named = {**labels, "service_name": "svc", **({SHARD_LABEL: "1"} if shard else {})}
    failed = [RawEntry(T0 + offset, "x", 1) for offset in offsets]
    verdict = interpret(429, stream_rate_limit_body("tenant", format_labels(named), failed, len(failed) + 3, limit) + "\n")
    assert verdict.action is Action.STREAM_THROTTLED and verdict.reason == "per_stream_rate_limit"
    assert verdict.stream == named
    assert (verdict.ignored, verdict.out_of) == (len(failed), len(failed) + 3)
    assert verdict.ignored_ts_ns == tuple(T0 + offset for offset in offsets[:10])
    assert verdict.limit_bytes_per_s == limit  # printed as datasize does: "256KB", "3MB"
    # What the collector sent matches by subset unless Loki named a shard.
    assert matching(verdict.stream, {"sent": labels}) == ([] if shard else ["sent"])


@BUDGET
@given(label_sets)
def test_stream_limit_bodies_name_the_stream(labels: dict[str, str]) -> None:
    verdict = interpret(429, stream_limit_body(format_labels(labels), "t") + "\n")
    assert verdict.action is Action.STREAM_THROTTLED and verdict.reason == "stream_limit" and verdict.stream == labels


@BUDGET
@given(label_sets)
def test_label_strings_round_trip(labels: dict[str, str]) -> None:
    assert parse_labels(format_labels(labels)) == labels


@BUDGET
@given(st.integers(min_value=200, max_value=299), st.integers(min_value=0, max_value=4_000_000_000))
def test_blocked_ingestion_holds_whatever_its_status(status: int, until: int) -> None:
    import time
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
    verdict = interpret(status, f"ingestion blocked for user t until '{stamp}' with status code '{status}'\n")
    assert verdict.action is Action.HOLD and verdict.until_wall == until
