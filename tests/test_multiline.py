"""Multiline joining: the joiner alone (fake clock), then a tailer over a plain file, where a joined
entry's start is held so the position never moves past half a trace."""

from __future__ import annotations

import asyncio
import json
import os

from collector.pipeline.entry import Entry, FilePosition, Origin
from collector.pipeline.queue import ChunkQueue
from collector.sources.files import FileTailer, InotifyHub, TailerSettings
from collector.sources.jsonfile import JsonFileParser
from collector.sources.source import SourceStats
from collector.transform.multiline import Joiner, continuation_matcher

JAVA = ["2026-11-22 12:00:00 ERROR request failed", "java.lang.IllegalStateException: boom",
        "\tat com.example.Api.handle(Api.java:42)", "\tat com.example.Server.run(Server.java:7)",
        "Caused by: java.io.IOException: closed", "\t... 2 more"]


def entries(lines: list[str], stream: str = "stdout") -> list[Entry]:
    return [Entry(1_000 + i, line, stream) for i, line in enumerate(lines)]


def test_java_preset_joins_a_trace_and_holds_the_open_one() -> None:
    now = [0.0]
    joiner = Joiner(continuation_matcher("java"), 1 << 20, timeout=1.0, clock=lambda: now[0])
    lines = ["INFO starting", *JAVA, "INFO next"]
    out = joiner.add(entries(lines), list(range(len(lines))))
    assert [e.line for e in out] == ["INFO starting", "\n".join(JAVA)]  # the logged message and its trace
    assert out[1].ts_ns == 1_001  # the first line's timestamp
    assert joiner.held == 7  # "INFO next" may still get continuations: its start is held
    assert joiner.flush(only_due=True) == []
    now[0] = 1.5
    assert [e.line for e in joiner.flush(only_due=True)] == ["INFO next"] and joiner.held is None


def test_python_and_go_presets_and_a_first_line_pattern() -> None:
    python = ["ERROR failed", "Traceback (most recent call last):", '  File "app.py", line 3, in <module>', "    main()",
              "ValueError: bad", "INFO ok"]
    joiner = Joiner(continuation_matcher("python"), 1 << 20)
    assert [e.line for e in joiner.add(entries(python), list(range(6)))] == ["\n".join(python[:5])]
    go = ["panic: oops", "", "goroutine 1 [running]:", "main.main()", "\t/app/main.go:9 +0x1d", "exit status 2", "next"]
    joiner = Joiner(continuation_matcher("go"), 1 << 20)
    assert [e.line for e in joiner.add(entries(go), list(range(7)))] == ["\n".join(go[:6])]
    dated = Joiner(continuation_matcher(r"^\d{4}-"), 1 << 20)
    out = dated.add(entries(["2026-01-01 a", "  b", "c", "2026-01-01 d"]), [0, 1, 2, 3])
    assert [e.line for e in out] == ["2026-01-01 a\n  b\nc"]


def test_streams_join_apart_and_the_size_cap_closes_an_entry() -> None:
    joiner = Joiner(continuation_matcher("java"), 20)
    mixed = [Entry(1, "A", "stdout"), Entry(2, "B", "stderr"), Entry(3, "\tat a", "stdout"), Entry(4, "\tat b", "stderr")]
    assert joiner.add(mixed, [10, 20, 30, 40]) == [] and joiner.held == 10
    assert sorted(e.line for e in joiner.flush()) == ["A\n\tat a", "B\n\tat b"]
    capped = joiner.add(entries(["X", "\t" + "y" * 15, "\t" + "z" * 15]), [0, 1, 2])
    assert [e.line for e in capped] == ["X\n\t" + "y" * 15]  # the next part would pass 20 bytes


def record(line: str) -> bytes:
    return (json.dumps({"log": line + "\n", "stream": "stdout", "time": "2026-11-22T12:00:00.000000001Z"}) + "\n").encode()


async def test_tailer_holds_the_position_at_an_open_trace_and_emits_it_whole(tmp_path) -> None:
    path = tmp_path / "c-json.log"
    path.write_bytes(b"".join(record(line) for line in ["INFO one", *JAVA[:4]]))
    queue = ChunkQueue(1 << 20)
    hub = InotifyHub()
    hub_task = asyncio.create_task(hub.run())
    tailer = FileTailer(str(path), Origin("c" * 64, {}), queue, hub, TailerSettings(65536, 0.2, drain_quiet=0.3),
                        JsonFileParser(), None, SourceStats(), None)
    tailer.join_lines(Joiner(continuation_matcher("java"), 1 << 20, timeout=30.0))
    task = asyncio.create_task(tailer.run())
    try:
        first = await asyncio.wait_for(queue.get(), 10)
        assert [e.line for e in first.entries] == ["INFO one"]
        # The trace is open: the position stays where its first record starts.
        trace_start = len(record("INFO one"))
        assert first.position == FilePosition(os.stat(path).st_ino, trace_start, first.position.fingerprint)
        with open(path, "ab") as handle:
            handle.write(b"".join(record(line) for line in [*JAVA[4:], "INFO after"]))
        second = await asyncio.wait_for(queue.get(), 10)
        assert [e.line for e in second.entries] == ["\n".join(JAVA)]
        assert second.position.offset == os.path.getsize(path) - len(record("INFO after"))
        tailer.drain()  # the container died: the last open entry goes out
        rest = await asyncio.wait_for(queue.get(), 10)
        assert [e.line for e in rest.entries] == ["INFO after"] and rest.position.offset == os.path.getsize(path)
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        hub.close()
        hub_task.cancel()
        await asyncio.gather(task, hub_task, return_exceptions=True)
