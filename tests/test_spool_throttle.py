"""A spool read back while Loki throttles one container's stream (429 with a rate): the other
containers' backlog is not held behind it, and the segments they share with it are deleted once
theirs is delivered; every line still arrives once, in order per container.

Loki is the fake Loki 3 of test_loki_throttle (a per-stream token bucket) on a clock that moves
only when the test moves it: the spool's reads and fsyncs take real time, which a fake clock
racing ahead on every wait would turn into fake seconds of pacing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from pathlib import Path

from test_loki_throttle import KB, FakeLoki3, Feeder, _sink

from collector.pipeline.entry import Chunk
from collector.pipeline.queue import ChunkQueue
from collector.spool.format import encode_chunk, encode_record
from collector.spool.lane import LaneSpool
from collector.spool.store import SpoolSettings


class SteppedClock:
    """Fake time that moves only in advance(); sleeps and waits end when it has moved far enough."""

    def __init__(self) -> None:
        self.now = 0.0
        self._ticked = asyncio.Event()

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        ticked, self._ticked = self._ticked, asyncio.Event()
        ticked.set()

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        while self.now < until:
            await self._ticked.wait()

    async def wait_event(self, event: asyncio.Event, timeout: float) -> None:
        until = self.now + timeout
        while not event.is_set() and self.now < until:
            waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._ticked.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()


async def settle(probe: Callable[[], Hashable], quiet_for: float = 0.15, limit: float = 20.0,
                 done: Callable[[], bool] = lambda: False) -> None:
    """Real time until `done()`, or until `probe()` has not changed for `quiet_for` seconds (idle)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last, since = probe(), loop.time()
    while loop.time() < deadline and loop.time() - since < quiet_for and not done():
        await asyncio.sleep(0.02)
        if (now := probe()) != last:
            last, since = now, loop.time()


def record_bytes(chunk: Chunk) -> int:
    return len(encode_record(encode_chunk(chunk)))


async def test_a_throttled_container_in_the_spool_neither_holds_back_the_others_nor_pins_their_segments(tmp_path: Path) -> None:
    clock = SteppedClock()
    loki = FakeLoki3(clock, rate=16 * KB, burst=16 * KB, limited={"hot"})  # type: ignore[arg-type]
    spool = LaneSpool(SpoolSettings(str(tmp_path), max_bytes=64 << 20, segment_bytes=256 * KB, headroom_bytes=0), lambda chunks: None)
    spool.open()
    queue = ChunkQueue(128 * KB, spool=spool)
    hot = Feeder(queue, "hot")  # 100 lines of 120 bytes a chunk
    quiet = [Feeder(queue, f"quiet{i}", lines_per_chunk=10) for i in range(5)]
    hot_record_bytes = 0
    for _ in range(160):  # a backlog left by an outage: ~1.9 MB of hot, ~1 MB of the others, interleaved
        made = hot.next_chunk()
        hot_record_bytes += record_bytes(made)
        spool.append(made)
        for feeder in quiet:
            spool.append(feeder.next_chunk())
    await spool.flush()
    queue.backlog_first()
    assert queue.spilling
    backlog_bytes = spool.bytes

    def acknowledge(chunks: list[Chunk]) -> None:  # what app._acknowledge does with read-back chunks
        for chunk in chunks:
            assert chunk.spooled is not None
            spool.delivered(chunk.spooled)

    sink = _sink(loki, clock, batch_max_bytes=64 * KB)
    tasks = [asyncio.create_task(sink.run(queue, acknowledge)), asyncio.create_task(spool.run()),
             asyncio.create_task(queue.refill())]

    def quiet_done() -> bool:
        return all(len(set(loki.lines(feeder.name))) == feeder.read for feeder in quiet)

    def probe() -> Hashable:
        return len(loki.stored), len(loki.posts), spool.stats.reads, spool.bytes, queue.nbytes

    try:
        # The clock stands still: Loki lets only the hot stream's burst through.
        await settle(probe, quiet_for=1.0, done=quiet_done)
        await settle(probe)  # and what follows the last delivery (segments deleted)
        quiet_stored = sum(len(set(loki.lines(feeder.name))) for feeder in quiet)
        held_bytes = spool.bytes
        # Then time goes on, one second at a time, until the others' backlog is delivered and then all.
        quiet_done_at = 0.0 if quiet_done() else None
        while len(set(loki.lines("hot"))) < hot.read or not quiet_done():
            clock.advance(1.0)
            await settle(probe, quiet_for=0.05)
            if quiet_done_at is None and quiet_done():
                quiet_done_at = clock.now
            assert clock.now < 1000, "the backlog never drained"
        await settle(lambda: (spool.bytes, spool.segments))
        print(f"\nbacklog {backlog_bytes} B in the spool (hot's records {hot_record_bytes} B); at fake time 0 "
              f"the others had {quiet_stored} of {sum(f.read for f in quiet)} lines stored and the spool held {held_bytes} B; "
              f"the others' last line was stored at {quiet_done_at} fake s, hot's at {clock.now} fake s; "
              f"spool at the end: {spool.bytes} B in {spool.segments} segments; moved aside: {spool.stats.forwarded_bytes} B")
        # Every line, in order per container (a push whose 429 names one stream has its other streams
        # resent alone: a duplicate at worst, so the order is that of first arrivals).
        for feeder in (hot, *quiet):
            first = list(dict.fromkeys(loki.lines(feeder.name)))
            assert len(first) == feeder.read and first == sorted(first), feeder.name
        assert not sink.stats.dropped
        assert spool.bytes == 0 and spool.segments == 0
        # While Loki took nothing more of hot, the others' backlog was delivered...
        assert quiet_stored == sum(f.read for f in quiet), f"others held behind the throttled stream until {quiet_done_at} fake s"
        # ...and the segments it shared with hot were deleted: what is left is hot's (and a segment being written).
        assert held_bytes <= hot_record_bytes + 2 * 256 * KB, f"segments pinned: {held_bytes} B held of {backlog_bytes} B"
        assert 0 < spool.stats.forwarded_bytes <= hot_record_bytes  # hot's records only, each moved at most once
    finally:
        queue.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await spool.close()
