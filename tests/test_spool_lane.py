"""The lane's spool on plain files (tmp_path) with a held container (what the sink paused): its
records are moved to its own segments as the reader meets them, the others' are handed and their
shared segments deleted once delivered; the moved records come back in order once it is released,
before any later record of it; a restart keeps that order; without room the reader hands (nothing
moved yet) or waits (records moved), never reorders."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from test_spool_store import chunk, lines, settings

from collector.pipeline.entry import Chunk
from collector.pipeline.queue import ChunkQueue
from collector.spool.format import encode_chunk, encode_record
from collector.spool.lane import HELD, LaneSpool


def opened(path: Path, held: set[str], **overrides) -> LaneSpool:
    spool = LaneSpool(settings(path, **overrides), lambda chunks: None)
    spool.attach(lambda: None, held.__contains__)
    spool.open()
    return spool


async def read_all(spool: LaneSpool) -> list[Chunk]:
    out: list[Chunk] = []
    while spool.has_unread():
        out += await spool.read(1 << 20)
    return out


def deliver(spool: LaneSpool, chunks: list[Chunk]) -> None:
    for c in chunks:
        assert c.spooled is not None
        spool.delivered(c.spooled)


def shared_segments(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith(".seg"))


def moved_directories(path: Path) -> list[str]:
    return sorted(os.listdir(path / HELD)) if (path / HELD).exists() else []


def names(of: str, count: int, start: int = 0) -> list[str]:
    return lines([chunk(of, n) for n in range(start, start + count)])


async def test_a_held_containers_records_are_moved_aside_and_the_shared_segments_are_freed(tmp_path: Path) -> None:
    held: set[str] = set()
    spool = opened(tmp_path, held)
    for n in range(30):
        spool.append(chunk("a", n))
        spool.append(chunk("b", n))
    await spool.flush()
    assert len(shared_segments(tmp_path)) >= 3
    held.add("a")
    back = await read_all(spool)
    assert lines(back) == names("b", 30)  # a's records are not handed while it is held
    deliver(spool, back)
    assert shared_segments(tmp_path) == []  # b's delivered: nothing pins the shared segments
    a_bytes = sum(len(encode_record(encode_chunk(chunk("a", n)))) for n in range(30))
    assert spool.stats.forwarded_records == 30 and spool.stats.forwarded_bytes == a_bytes
    assert a_bytes <= spool.bytes <= a_bytes + 1024 and len(moved_directories(tmp_path)) == 1
    assert not spool.has_unread() and not spool.caught_up()  # the lane keeps spilling
    held.discard("a")
    assert spool.has_unread()
    back = await read_all(spool)
    assert lines(back) == names("a", 30) and all(c.spooled and c.spooled.chain == "a" for c in back)
    assert spool.caught_up()
    deliver(spool, back)
    assert spool.bytes == 0 and spool.segments == 0 and moved_directories(tmp_path) == []
    assert spool.stats.forwarded_records == 30  # each record moved once
    await spool.close()


async def test_a_containers_later_records_follow_its_moved_ones_even_once_it_is_released(tmp_path: Path) -> None:
    held = {"a"}
    spool = opened(tmp_path, held)
    for c in (chunk("a", 0), chunk("b", 0), chunk("a", 1)):
        spool.append(c)
    await spool.flush()
    got = await read_all(spool)
    assert lines(got) == names("b", 1)
    held.clear()
    for c in (chunk("a", 2), chunk("b", 1)):
        spool.append(c)
    await spool.flush()
    while spool.has_unread():
        got += await spool.read(1 << 20)
    a = [c for c in got if c.origin.container_id == "a"]
    assert lines(a) == names("a", 3)  # a2 went behind a0 and a1, not ahead of them
    assert lines([c for c in got if c.origin.container_id == "b"]) == names("b", 2)
    assert spool.stats.forwarded_records == 3
    await spool.close()


async def test_after_a_crash_the_container_is_read_in_order_and_moved_records_are_not_sent_twice(tmp_path: Path) -> None:
    held: set[str] = set()
    spool = opened(tmp_path, held)
    for c in (chunk("a", 0), chunk("b", 0)):
        spool.append(c)
    await spool.flush()
    first = await read_all(spool)  # a0 is handed, and still with the sink when the collector dies
    deliver(spool, [c for c in first if c.origin.container_id == "b"])
    held.add("a")
    for c in (chunk("a", 1), chunk("b", 1), chunk("a", 2)):
        spool.append(c)
    await spool.flush()
    assert lines(await read_all(spool)) == names("b", 1, start=1)  # a1, a2 moved aside (the cursor saved at once)
    spool.abandon()  # kill -9: b1 not delivered, a0 not delivered
    again = opened(tmp_path, set())
    back = await read_all(again)
    assert lines([c for c in back if c.origin.container_id == "a"]) == names("a", 3)  # a0 first: it is older
    assert lines([c for c in back if c.origin.container_id == "b"]) == names("b", 1, start=1)
    deliver(again, back)
    assert again.bytes == 0 and moved_directories(tmp_path) == []
    await again.close()


async def test_without_room_to_move_the_reader_waits_behind_a_moved_container_and_never_hands_it_early(tmp_path: Path) -> None:
    held = {"a"}
    spool = opened(tmp_path, held, max_bytes=3000, segment_bytes=1000)
    for n in range(9):
        spool.append(chunk("a", n))
        spool.append(chunk("b", n))
    await spool.flush()
    first = await read_all(spool)  # moves a's records until even the extra own segment is full, then waits
    moved = spool.stats.forwarded_records
    assert 0 < moved < 9 and lines(first) == names("b", len(first))
    assert not spool.has_unread()  # waiting: no b past the a it stopped at
    deliver(spool, first)  # b's delivered: shared segments freed, room again
    assert spool.has_unread()
    rest = await read_all(spool)
    assert lines(first + rest) == names("b", 9) and spool.stats.forwarded_records == 9
    held.clear()
    assert lines(await read_all(spool)) == names("a", 9)
    await spool.close()


async def test_without_room_a_held_container_with_nothing_moved_is_handed_as_before(tmp_path: Path) -> None:
    held = {"a"}
    spool = opened(tmp_path, held, headroom_bytes=1 << 62)  # the volume is "full" (other jobs change what is free)
    for n in range(3):
        spool.append(chunk("a", n))
        spool.append(chunk("b", n))
    await spool.flush()
    back = await read_all(spool)
    assert lines(back) == lines([chunk(x, n) for n in range(3) for x in "ab"]) and spool.stats.forwarded_records == 0
    await spool.close()


async def test_the_queue_has_a_resumed_containers_moved_records_read_back(tmp_path: Path) -> None:
    spool = opened(tmp_path, set())
    for n in range(4):
        spool.append(chunk("a", n))
        spool.append(chunk("b", n))
    await spool.flush()
    queue = ChunkQueue(1 << 20, spool=spool)  # the backlog of the last run: spilling
    queue.pause("a")  # the sink holds a's stream
    refill = asyncio.create_task(queue.refill())
    got = [await asyncio.wait_for(queue.get(), 5) for _ in range(4)]
    assert lines(got) == names("b", 4)
    await asyncio.sleep(0.05)
    assert queue.nbytes == 0 and queue.spilling
    queue.resume("a")
    got = [await asyncio.wait_for(queue.get(), 5) for _ in range(4)]
    assert lines(got) == names("a", 4)
    deliver(spool, got)
    await asyncio.sleep(0.05)
    assert not queue.spilling  # read back, nothing moved aside left: the memory path again
    queue.close()
    await refill
    await spool.close()


async def test_what_the_sink_holds_is_copied_never_handed_and_sent_only_after_a_crash(tmp_path: Path) -> None:
    durable: list[Chunk] = []
    spool = LaneSpool(settings(tmp_path), durable.extend)
    spool.attach(lambda: None, set().__contains__)
    spool.open()
    held = [chunk("a", 0), chunk("a", 1), chunk("c", 0)]  # in a push Loki has not answered yet
    assert spool.insure(held) == 3
    spool.append(chunk("a", 2))  # then the lane spills: later chunks follow the copies
    spool.append(chunk("b", 0))
    await spool.flush()
    assert durable[:3] == held  # durable: their positions may advance past them now
    spool.original_delivered(held[2])  # delivered before the reader met its copy
    back = await read_all(spool)
    assert lines(back) == lines([chunk("a", 2), chunk("b", 0)])  # the sink sends the originals, not the copies
    spool.original_delivered(held[0])  # and after
    deliver(spool, back)
    await spool.save_cursor()
    spool.abandon()  # kill -9 while a1 is still in the sink
    again = opened(tmp_path, set())
    assert lines(await read_all(again)) == lines([chunk("a", 1)])  # its copy is all that is sent again
    await again.close()


async def test_the_copy_is_settled_even_when_the_ack_ledger_has_emptied_the_original(tmp_path: Path) -> None:
    spool = opened(tmp_path, set())
    original = chunk("a", 0)
    spool.insure([original])
    await spool.flush()
    assert await read_all(spool) == []
    original.entries = []  # delivered while waiting behind an older chunk: only its position is kept
    spool.original_delivered(original)
    assert spool.bytes == 0 and spool.segments == 0  # its copy is resolved, the segment gone
    await spool.close()
