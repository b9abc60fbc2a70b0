#!/usr/bin/env python
"""CPU per line of the two decoders alone (no I/O): the json-file parser and the API stream decoder.

    python bench/parsers.py            # prints a markdown table; --lines N --repeat R

Each case is decoded `repeat` times from fresh decoder state, in chunks of 64 KiB as a tailer reads
them; the best run is reported (the least disturbed by other work on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from collections.abc import Callable

from collector.sources.apistream import PART_BYTES, StreamDecoder
from collector.sources.jsonfile import JsonFileParser

CHUNK = 64 * 1024
TEXT = "INFO request id={i} path=/api/v1/items/{i} status=200 dur_ms={d} user=alice"
LONG = 40_000  # a split line: two 16 KiB parts and a final one


def stamp(i: int) -> str:
    # A new second every 1000 lines; Docker drops a fraction's trailing zeros, so vary its length.
    seconds, nanos = divmod(i, 1000)
    fraction = f"{nanos * 1_000_000 + 7:09d}".rstrip("0") or "0"
    return f"2026-11-22T12:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{fraction}Z"


def json_records(lines: int, split_every: int = 0) -> tuple[bytes, int]:
    """A json-file log; every `split_every`-th line is a LONG line in 16 KiB records."""
    out = []
    for i in range(lines):
        time_text = stamp(i)
        if split_every and i % split_every == 0:
            whole = "x" * LONG + "\n"
            for at in range(0, len(whole), PART_BYTES):
                out.append(json.dumps({"log": whole[at:at + PART_BYTES], "stream": "stdout", "time": time_text}))
        else:
            out.append(json.dumps({"log": TEXT.format(i=i, d=i % 1000) + "\n", "stream": "stdout", "time": time_text}))
    return ("\n".join(out) + "\n").encode(), lines


def frames(lines: int, split_every: int = 0, tty: bool = False) -> tuple[bytes, int]:
    """An API stream body (frames, or TTY bytes); every `split_every`-th line is a LONG line."""
    out = []
    for i in range(lines):
        at = f"2026-11-22T12:00:00.{i:09d}Z".encode()
        long = split_every and i % split_every == 0
        text = (b"x" * LONG if long else TEXT.format(i=i, d=i % 1000).encode()) + b"\n"
        parts = [text[p:p + PART_BYTES] for p in range(0, len(text), PART_BYTES)] if long else [text]
        for part in parts:
            payload = at + b" " + part
            out.append(payload if tty else bytes([1, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload)
    return b"".join(out), lines


def best_ns_per_line(run: Callable[[], int], lines: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time_ns()
        produced = run()
        best = min(best, time.process_time_ns() - start)
        assert produced == lines, (produced, lines)
    return best / lines


def json_file_run(data: bytes, starts: bool) -> Callable[[], int]:
    def run() -> int:
        parser = JsonFileParser()
        if starts:
            parser.starts = []
        produced = 0
        offset = 0
        rest = b""
        for at in range(0, len(data), CHUNK):
            chunk = rest + data[at:at + CHUNK]
            cut = chunk.rfind(b"\n") + 1
            entries, _ = parser.feed(chunk[:cut], offset)
            produced += len(entries)
            offset += cut
            rest = chunk[cut:]
        return produced + len(parser.flush())
    return run


def stream_run(body: bytes, tty: bool, starts: bool = False) -> Callable[[], int]:
    def run() -> int:
        decoder = StreamDecoder(tty)
        if starts:
            decoder.starts = []
        produced = 0
        for at in range(0, len(body), CHUNK):
            produced += len(decoder.feed(body[at:at + CHUNK]))
        return produced + len(decoder.finish())
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n, repeat = args.lines, args.repeat
    plain_json, _ = json_records(n)
    split_json, _ = json_records(n // 10, split_every=50)
    plain_frames, _ = frames(n)
    split_frames, _ = frames(n // 10, split_every=50)
    tty_body, _ = frames(n, tty=True)
    cases = [
        ("json-file, short lines", json_file_run(plain_json, starts=False), n),
        ("json-file, short lines, multiline starts kept", json_file_run(plain_json, starts=True), n),
        ("json-file, 1 line in 50 split (40 kB)", json_file_run(split_json, starts=False), n // 10),
        ("API frames, short lines", stream_run(plain_frames, tty=False), n),
        ("API frames, short lines, multiline starts kept", stream_run(plain_frames, tty=False, starts=True), n),
        ("API frames, 1 line in 50 split (40 kB)", stream_run(split_frames, tty=False), n // 10),
        ("API TTY, short lines", stream_run(tty_body, tty=True), n),
    ]
    print(f"| case | ns per line (best of {repeat}) |")
    print("|---|---:|")
    for name, run, lines in cases:
        print(f"| {name} | {best_ns_per_line(run, lines, repeat):,.0f} |")


if __name__ == "__main__":
    main()
