"""Finding where to start in a json-file log: bisection by time, end of the last whole record."""

from __future__ import annotations

import json
import os
import time

import pytest

from collector.sources.seek import end_offset, offset_for_time

BASE_NS = 1795351032 * 10**9


def write_log(path, count: int, step_ns: int, pad: int = 0, torn_tail: bytes = b"") -> list[int]:
    """Records at BASE + i*step; returns each record's start offset."""
    starts, offset = [], 0
    with open(path, "wb") as handle:
        for i in range(count):
            ns = BASE_NS + i * step_ns
            seconds, nanos = divmod(ns, 10**9)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"
            raw = json.dumps({"log": f"l {i} {'x' * (pad + i % 7)}\n", "stream": "stdout", "time": text}).encode() + b"\n"
            starts.append(offset)
            handle.write(raw)
            offset += len(raw)
        handle.write(torn_tail)
    return starts


@pytest.mark.parametrize("target", [0, 1, 777, 5000, 19999])
def test_bisection_finds_the_first_record_at_or_after_the_cutoff(tmp_path, target: int) -> None:
    path = tmp_path / "log"
    starts = write_log(path, 20000, 1_000_000, pad=40)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset, read = offset_for_time(fd, size, BASE_NS + target * 1_000_000 - 1)
        assert offset == starts[target]
        assert read < size / 4
        assert offset_for_time(fd, size, BASE_NS + 10**12)[0] == size  # all older: start at the end
    finally:
        os.close(fd)


def test_end_offset_stops_before_a_torn_record(tmp_path) -> None:
    path = tmp_path / "log"
    write_log(path, 300, 1, torn_tail=b'{"log":"half')
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert end_offset(fd, size) == size - len(b'{"log":"half')
        assert end_offset(fd, 0) == 0
    finally:
        os.close(fd)
