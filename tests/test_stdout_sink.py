"""The stdout sink when its reader goes away (`collector | head`): it stops, acknowledging only what was written."""

from __future__ import annotations

import asyncio
import io
import os

from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin
from collector.pipeline.queue import ChunkQueue
from collector.sinks.stdout import StdoutSink


class ClosesAfter(io.RawIOBase):
    """An output whose reader leaves after `accepted` writes."""

    def __init__(self, accepted: int) -> None:
        self.accepted = accepted
        self.written: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if len(self.written) >= self.accepted:
            raise BrokenPipeError(32, "Broken pipe")
        self.written.append(bytes(data))
        return len(data)


def chunk(offset: int) -> Chunk:
    return Chunk(Origin("c1", {"container_name": "web"}), [Entry(offset, f"line {offset}", "stdout")], 10, FilePosition(7, offset))


async def test_broken_pipe_stops_the_sink_and_acknowledges_only_what_was_written() -> None:
    out = ClosesAfter(accepted=2)
    queue = ChunkQueue(1 << 20)
    for offset in (10, 20, 30, 40):
        await queue.put(chunk(offset))
    acknowledged: list[Chunk] = []
    async with asyncio.timeout(10):
        await StdoutSink(out).run(queue, acknowledged.extend)  # returns: no exception, no wait for more
    assert [c.position for c in acknowledged] == [FilePosition(7, 10), FilePosition(7, 20)]
    assert [line.count(b"\n") for line in out.written] == [1, 1]
    assert b"line 10" in out.written[0] and b"line 20" in out.written[1]


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def test_reader_leaving_while_nothing_is_printed_stops_the_sink() -> None:
    """`collector | head -1` with quiet containers: no write ever meets the closed pipe, yet the sink stops."""
    read_end, write_end = os.pipe()
    queue = ChunkQueue(1 << 20)
    acknowledged: list[Chunk] = []
    with os.fdopen(write_end, "wb") as out:
        sink = asyncio.create_task(StdoutSink(out).run(queue, acknowledged.extend))
        await queue.put(chunk(10))
        async with asyncio.timeout(10):
            await _readable(read_end)
        assert b"line 10" in os.read(read_end, 1 << 16)
        os.close(read_end)  # the reader has what it wanted and leaves; nothing more is queued
        async with asyncio.timeout(10):
            await sink
    assert [c.position for c in acknowledged] == [FilePosition(7, 10)]


async def test_a_quiet_pipe_with_its_reader_still_there_keeps_the_sink_running() -> None:
    read_end, write_end = os.pipe()
    queue = ChunkQueue(1 << 20)
    try:
        with os.fdopen(write_end, "wb") as out:
            sink = asyncio.create_task(StdoutSink(out).run(queue, [].extend))
            await asyncio.sleep(0.5)
            assert not sink.done()  # an idle pipe is no closed pipe
            queue.close()
            async with asyncio.timeout(10):
                await sink
    finally:
        os.close(read_end)
