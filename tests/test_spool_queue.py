"""The queue with a spool (plain files, tmp_path): spill when full, every chunk of a spilling lane
through the spool until it is read back, the memory path again after; a full spool falls back to
waiting; positions advance in read order per container across both paths and never pass a chunk
that is neither durable nor delivered."""

from __future__ import annotations

import asyncio
from pathlib import Path

from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin, Position
from collector.pipeline.queue import ChunkQueue
from collector.pipeline.readorder import ReadOrder
from collector.spool.lane import LaneSpool
from collector.spool.store import SpoolSettings


def chunk(container: str, n: int, nbytes: int = 100) -> Chunk:
    return Chunk(Origin(container, {}), [Entry(n, f"{container} {n}", "stdout")], nbytes, FilePosition(1, n))


class Pipeline:
    """Queue + spool + read-order ledger wired as app.py wires them; `positions` is what would be saved."""

    def __init__(self, path: Path, queue_bytes: int = 300, spool_bytes: int = 1 << 20, read_ahead: int | None = None) -> None:
        self.positions: dict[str, Position] = {}
        self.order = ReadOrder(self.positions.__setitem__)
        self.spool = LaneSpool(SpoolSettings(str(path), spool_bytes, 4096, headroom_bytes=0), self.order.complete)
        self.spool.open()
        self.queue = ChunkQueue(queue_bytes, on_put=self.order.track, spool=self.spool, read_ahead=read_ahead)
        self.tasks = [asyncio.create_task(self.spool.run()), asyncio.create_task(self.queue.refill())]

    def deliver(self, got: list[Chunk]) -> None:
        """What app._acknowledge does with what the sink acknowledges."""
        for item in got:
            if item.spooled is not None:
                self.spool.delivered(item.spooled)
            else:
                self.order.complete([item])

    async def get(self, count: int) -> list[Chunk]:
        return [await asyncio.wait_for(self.queue.get(), 5) for _ in range(count)]

    async def close(self) -> None:
        self.queue.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.spool.close()


def ns(chunks: list[Chunk]) -> list[int]:
    return [c.entries[0].ts_ns for c in chunks]


async def test_a_full_queue_spills_and_everything_comes_back_in_order_then_the_memory_path_again(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path)
    written = [chunk("a", n) for n in range(10)]
    for item in written:  # 3 fit in memory, then the lane spills (those 3 first): room() never waits
        await asyncio.wait_for(pipe.queue.room(100, "a"), 1)
        pipe.queue.put_nowait(item)
    assert pipe.queue.spilling
    # A spilled chunk keeps no lines while it waits for its write: its record holds them.
    assert all(item.entries == [] for item in written)
    got = await pipe.get(10)
    assert ns(got) == list(range(10))
    assert all(c.spooled is not None for c in got)
    pipe.deliver(got)
    await asyncio.sleep(0.05)
    assert not pipe.queue.spilling  # read back up to the writer: memory again
    pipe.queue.put_nowait(chunk("a", 10))
    assert pipe.queue.nbytes == 100 and pipe.spool.bytes == 0
    await pipe.close()


async def test_what_is_read_back_fills_the_queue_only_to_its_read_ahead(tmp_path: Path) -> None:
    """Read-back is quick: the sink's next batches' worth in memory does, not the whole queue (a
    read-back chunk's lines cost about three times their bytes as objects)."""
    pipe = Pipeline(tmp_path, queue_bytes=1000, read_ahead=300)
    for n in range(25):  # 10 fit in memory, then the lane spills
        pipe.queue.put_nowait(chunk("a", n))
    got = await pipe.get(10)  # from memory: the spool is read back as they leave
    most = 0
    while len(got) < 25:
        await asyncio.sleep(0.02)  # the refill has read back what it may
        most = max(most, pipe.queue.nbytes)
        got += await pipe.get(1)
    assert ns(got) == list(range(25))
    assert most == 300
    await pipe.close()


async def test_once_spilling_every_chunk_goes_to_the_spool_even_when_memory_has_room(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path)
    for n in range(5):
        pipe.queue.put_nowait(chunk("a", n))
    first = await pipe.queue.get()  # memory has room now, but the spool holds older chunks
    assert pipe.queue.spilling and pipe.queue.nbytes <= 300
    pipe.queue.put_nowait(chunk("a", 5))
    assert pipe.queue.spilling
    got = [first, *await pipe.get(5)]
    assert ns(got) == list(range(6))
    await pipe.close()


async def test_a_full_spool_falls_back_to_waiting_for_room(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path, spool_bytes=2000)
    n = 0
    while True:
        try:
            await asyncio.wait_for(pipe.queue.room(100, "a"), 0.2)
        except TimeoutError:
            break
        pipe.queue.put_nowait(chunk("a", n))
        n += 1
    assert 5 < n < 80 and pipe.queue.spilling and pipe.spool.bytes <= 2000  # the spool counts its records on disk
    waiting = asyncio.create_task(pipe.queue.room(100, "a"))
    got = await pipe.get(n)  # the sink takes and delivers: segments are deleted, room comes back
    pipe.deliver(got)
    await asyncio.wait_for(waiting, 5)
    assert ns(got) == list(range(n))
    await pipe.close()


async def test_positions_never_pass_a_chunk_that_is_neither_durable_nor_delivered(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path)
    for n in range(3):  # memory
        pipe.queue.put_nowait(chunk("a", n))
    memory = await pipe.get(3)  # the sink holds them (not delivered: Loki is down)
    for n in range(3, 6):  # memory again
        pipe.queue.put_nowait(chunk("a", n))
    pipe.queue.put_nowait(chunk("b", 0))  # spills: a 3..5 first, then b
    await pipe.spool.flush()
    # a's spooled chunks are durable, but the ones the sink holds are not delivered: a stays put.
    assert "a" not in pipe.positions and pipe.positions["b"] == FilePosition(1, 0)
    pipe.deliver(memory[1:2])  # the second one only: still nothing for a
    assert "a" not in pipe.positions
    pipe.deliver(memory[:1])
    assert pipe.positions["a"] == FilePosition(1, 1)
    pipe.deliver(memory[2:])  # now every earlier chunk completed: past the durable ones too
    assert pipe.positions["a"] == FilePosition(1, 5)
    back = await pipe.get(4)
    assert ns(back) == [3, 4, 5, 0]
    pipe.deliver(back)  # read-back chunks never reach the positions
    assert pipe.positions["a"] == FilePosition(1, 5) and len(pipe.order) == 0
    await pipe.close()


async def test_a_backlog_left_by_the_last_run_goes_before_anything_new(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path)
    for n in range(6):
        pipe.queue.put_nowait(chunk("a", n))
    await pipe.spool.flush()
    await pipe.close()  # 0..2 went to the spool first when the lane spilled, then 3..5
    again = Pipeline(tmp_path)
    assert again.queue.spilling
    again.queue.put_nowait(chunk("a", 6))
    assert ns(await again.get(7)) == [0, 1, 2, 3, 4, 5, 6]
    await again.close()


async def test_at_shutdown_what_is_still_queued_goes_to_the_spool(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path)
    for n in range(3):
        pipe.queue.put_nowait(chunk("a", n))
    pipe.queue.close()
    assert pipe.queue.spill_remaining() == 3
    await pipe.spool.flush()
    assert pipe.positions["a"] == FilePosition(1, 2)  # durable now
    await pipe.close()
    again = Pipeline(tmp_path)
    assert ns(await again.get(3)) == [0, 1, 2]
    await again.close()


async def test_what_the_sink_holds_as_the_lane_spills_is_made_durable_and_pins_no_position(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path)
    for n in range(3):
        pipe.queue.put_nowait(chunk("a", n))
    held = await pipe.get(3)  # the sink's push of them goes unanswered (Loki is down)
    pipe.queue.before_spill = lambda: pipe.spool.insure(held)
    for n in range(3, 6):
        pipe.queue.put_nowait(chunk("a", n))
    pipe.queue.put_nowait(chunk("b", 0))  # spills: the sink's chunks are copied first
    await pipe.spool.flush()
    assert pipe.positions["a"] == FilePosition(1, 5)  # past what the sink holds: it is durable too
    back = await pipe.get(4)
    assert ns(back) == [3, 4, 5, 0]  # the copies are not handed: the sink sends its own
    pipe.deliver(held)
    pipe.spool.original_delivered(held[0])  # as app._acknowledge does
    pipe.spool.original_delivered(held[1])
    pipe.spool.original_delivered(held[2])
    pipe.deliver(back)
    assert pipe.spool.bytes == 0
    await pipe.close()
