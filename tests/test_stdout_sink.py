"""The stdout sink when its reader goes away (`collector | head`): it stops, acknowledging only what was written."""

from __future__ import annotations

import asyncio
import io

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
