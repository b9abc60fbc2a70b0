import asyncio

import pytest

from collector.pipeline.entry import Chunk, Origin
from collector.pipeline.queue import ChunkQueue, QueueClosed


def chunk(tag: str, nbytes: int) -> Chunk:
    return Chunk(Origin(tag, {}), [], nbytes)


async def test_bounded_in_bytes_and_putters_served_in_arrival_order() -> None:
    queue = ChunkQueue(max_bytes=100)
    await queue.put(chunk("a", 60))
    order: list[str] = []

    async def put(tag: str, nbytes: int) -> None:
        await queue.put(chunk(tag, nbytes))
        order.append(tag)

    busy = asyncio.create_task(put("busy", 60))
    await asyncio.sleep(0)
    quiet = asyncio.create_task(put("quiet", 10))  # fits, but must not jump the queue
    await asyncio.sleep(0.01)
    assert order == [] and queue.nbytes == 60
    assert (await queue.get()).origin.container_id == "a"
    await asyncio.gather(busy, quiet)
    assert order == ["busy", "quiet"] and queue.nbytes == 70


async def test_oversized_item_goes_into_an_empty_queue() -> None:
    queue = ChunkQueue(max_bytes=10)
    await asyncio.wait_for(queue.put(chunk("big", 1000)), 1)
    assert queue.nbytes == 1000


async def test_close_drains_then_raises() -> None:
    queue = ChunkQueue(max_bytes=10)
    await queue.put(chunk("x", 5))
    queue.close()
    assert (await queue.get()).origin.container_id == "x"
    with pytest.raises(QueueClosed):
        await queue.get()
    with pytest.raises(QueueClosed):
        await queue.put(chunk("y", 1))


async def test_cancelled_putter_passes_its_turn_on() -> None:
    """A putter woken for its turn but cancelled before it ran must hand the turn to the next one."""
    queue = ChunkQueue(max_bytes=10)
    await queue.put(chunk("a", 10))
    first = asyncio.create_task(queue.put(chunk("b", 5)))
    second = asyncio.create_task(queue.put(chunk("c", 5)))
    await asyncio.sleep(0)  # both wait, first in line
    await queue.get()  # wakes `first` (its waiter gets a result) ...
    first.cancel()  # ... and it is cancelled before it could run: the turn is passed on or lost
    await asyncio.wait_for(second, 5)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert [queue.get_nowait().origin.container_id] == ["c"] and queue.nbytes == 0


async def test_a_turn_taken_by_room_without_a_put_passes_on() -> None:
    """A source takes its turn (room), then finds nothing to read: the next waiter must still go."""
    queue = ChunkQueue(max_bytes=10)
    await queue.put(chunk("a", 10))
    idle = asyncio.create_task(queue.room(5))
    busy = asyncio.create_task(queue.put(chunk("b", 5)))
    await asyncio.sleep(0)
    await queue.get()  # wakes `idle`, which puts nothing
    await asyncio.wait_for(idle, 1)
    await asyncio.wait_for(busy, 1)
    assert queue.get_nowait().origin.container_id == "b"
