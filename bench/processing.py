#!/usr/bin/env python
"""CPU per line of the optional processing: multiline joining, field extraction,
redaction, drop rules, measured on the processing code alone (the rest of the path is bench/cpu.py).

    python bench/processing.py        # prints a markdown table; --lines N
"""

from __future__ import annotations

import argparse
import re
import time

import msgspec

from collector.config import Config, decode_hook
from collector.pipeline.entry import Entry
from collector.transform.lines import ProcessingStats, build_processor
from collector.transform.multiline import Joiner, continuation_matcher

PLAIN = "2026-11-22T12:00:00Z INFO request id={i} path=/api/v1/items/{i} status=200 dur_ms={d} user=alice password=s{i}"
JSON = '{{"ts":"2026-11-22T12:00:00Z","level":"info","msg":"request","id":{i},"trace_id":"t{i}","status":200}}'
LOGFMT = 'ts=2026-11-22T12:00:00Z level=info msg="request done" id={i} trace_id=t{i} status=200'
TRACE = ["ERROR request failed id={i}", "java.lang.IllegalStateException: boom", "\tat com.example.Api.handle(Api.java:42)",
         "\tat com.example.Server.run(Server.java:7)", "Caused by: java.io.IOException: closed", "\t... 2 more"]


def processing(**tree):
    return msgspec.convert({"processing": tree}, Config, dec_hook=decode_hook, strict=False).processing


def per_line(run, entries: list[Entry], chunk: int = 2000) -> float:
    start = time.process_time()
    for index in range(0, len(entries), chunk):
        run(entries[index:index + chunk])
    return (time.process_time() - start) / len(entries) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    n = args.lines
    plain = [Entry(i, PLAIN.format(i=i, d=i % 1000), "stdout") for i in range(n)]
    json_lines = [Entry(i, JSON.format(i=i), "stdout") for i in range(n)]
    logfmt = [Entry(i, LOGFMT.format(i=i), "stdout") for i in range(n)]
    traces = [Entry(i, line.format(i=i), "stdout") for i in range(n // len(TRACE)) for line in TRACE]
    stats = ProcessingStats()
    rows = [("copying the chunk (the floor)", per_line(lambda chunk: list(chunk), plain))]
    cases = [
        ("redaction (`password=\\S+`)", processing(redact=[{"regex": r"password=\S+", "replacement": "password=***"}]), plain),
        ("drop rule that never matches", processing(drop=["GET /healthz"]), plain),
        ("JSON fields (level, trace_id)", processing(parse="json", fields=["level", "trace_id"]), json_lines),
        ("logfmt fields (level, trace_id)", processing(parse="logfmt", fields=["level", "trace_id"]), logfmt),
        ("timestamp from the line (rfc3339)", processing(timestamp_format="rfc3339"), plain),
    ]
    for name, config, entries in cases:
        processor = build_processor(config, {}, stats, [])
        assert processor is not None
        rows.append((name, per_line(processor.process, entries)))
    joiner = Joiner(continuation_matcher("java"), 1 << 20, timeout=3600)
    rows.append(("multiline, java preset (per raw line)", per_line(lambda chunk: joiner.add(chunk, list(range(len(chunk)))), traces)))
    dated = Joiner(continuation_matcher(r"^\d{4}-"), 1 << 20, timeout=3600)
    rows.append(("multiline, first-line regex `^\\d{4}-` (per raw line)", per_line(lambda chunk: dated.add(chunk, list(range(len(chunk)))), plain)))
    print(f"| processing ({n:,} lines, chunks of 2,000) | CPU µs per line |\n|---|---:|")
    for name, micros in rows:
        print(f"| {name} | {micros:.2f} |")


if __name__ == "__main__":
    re.purge()
    main()
