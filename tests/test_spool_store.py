"""The Spool on plain files (tmp_path): append, fsync (durable), read back oldest first, deliver,
delete whole segments; restart from the cursor; a crash at every byte of the last record; a corrupt
byte; the size cap; an unwritable directory."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin
from collector.spool.format import HEADER_BYTES, encode_chunk, encode_record
from collector.spool.store import Spool, SpoolSettings


def chunk(container: str, n: int, size: int = 100) -> Chunk:
    origin = Origin(container, {"container_name": container})
    return Chunk(origin, [Entry(n, f"{container} {n} " + "x" * size, "stdout")], size, FilePosition(1, n))


def settings(path: Path, **overrides) -> SpoolSettings:
    values = {"path": str(path), "max_bytes": 10 * 1024 * 1024, "segment_bytes": 4096, "headroom_bytes": 0, **overrides}
    return SpoolSettings(**values)


class Durable:
    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    def __call__(self, chunks: list[Chunk]) -> None:
        self.chunks += chunks


def lines(chunks: list[Chunk]) -> list[str]:
    return [e.line.split(" x")[0].rstrip("x ") for c in chunks for e in c.entries]


def opened(path: Path, durable: Durable | None = None, **overrides) -> Spool:
    spool = Spool(settings(path, **overrides), durable or Durable())
    spool.open()
    return spool


async def read_all(spool: Spool) -> list[Chunk]:
    out: list[Chunk] = []
    while spool.has_unread():
        out += await spool.read(1 << 20)
    return out


def segments(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith(".seg"))


async def test_appended_chunks_are_durable_after_fsync_read_back_in_order_delivered_and_deleted(tmp_path: Path) -> None:
    durable = Durable()
    spool = opened(tmp_path, durable)
    written = [chunk("a", i) for i in range(100)]
    expected = lines(written)
    for c in written:
        assert spool.has_room(c.nbytes)
        spool.append(c)
    assert durable.chunks == [] and not spool.has_unread()  # nothing is durable before the fsync
    await spool.flush()
    assert durable.chunks == written  # the same objects, in order
    assert len(segments(tmp_path)) > 3  # rotated at segment_bytes
    back = await read_all(spool)
    assert lines(back) == expected and all(c.spooled is not None for c in back)
    assert spool.caught_up() and spool.stats.reads == 100 and spool.stats.writes == 100
    for c in back[:50]:
        spool.delivered(c.spooled)
    assert 1 <= len(segments(tmp_path)) < 4  # fully delivered sealed segments are gone
    for c in reversed(back[50:]):  # out of order across containers is fine
        spool.delivered(c.spooled)
    assert segments(tmp_path) == [] and spool.bytes == 0 and spool.segments == 0  # the active one is sealed and removed too
    await spool.close()


async def test_restart_resends_only_what_was_not_delivered_by_the_last_cursor_checkpoint(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    for i in range(40):
        spool.append(chunk("a", i))
    await spool.flush()
    back = await read_all(spool)
    for c in back[:25]:
        spool.delivered(c.spooled)
    await spool.save_cursor()
    for c in back[25:30]:
        spool.delivered(c.spooled)  # delivered after the checkpoint: re-sent after a crash
    spool.abandon()  # a crash: no final cursor, no flush
    again = opened(tmp_path)
    assert again.has_unread()
    resent = await read_all(again)
    # At most the five delivered since the checkpoint come again (fewer when a segment they
    # completed was deleted at once), and everything after them.
    assert 10 <= len(resent) <= 15 and lines(resent) == lines(back[-len(resent):])
    await again.close()


async def test_a_crash_at_every_byte_of_the_last_record_loses_only_that_record(tmp_path: Path) -> None:
    source = tmp_path / "source"
    spool = opened(source, segment_bytes=1 << 20)
    for i in range(3):
        spool.append(chunk("a", i))
    await spool.flush()
    spool.abandon()
    [name] = segments(source)
    data = (source / name).read_bytes()
    last = len(encode_record(encode_chunk(chunk("a", 2))))
    for cut in range(len(data) - last, len(data)):
        crashed = tmp_path / f"cut{cut}"
        crashed.mkdir()
        (crashed / name).write_bytes(data[:cut])
        again = opened(crashed)
        got = await read_all(again)
        assert lines(got) == lines([chunk("a", 0), chunk("a", 1)]), cut
        assert again.stats.torn_records == (1 if cut > len(data) - last else 0)
        assert again.stats.corrupt_records == 0
        for c in got:
            again.delivered(c.spooled)
        assert segments(crashed) == []  # the torn tail does not pin the segment
        await again.close()


async def test_a_corrupt_byte_in_the_middle_the_later_records_are_still_read(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1 << 20)
    for i in range(5):
        spool.append(chunk("a", i))
    await spool.flush()
    spool.abandon()
    [name] = segments(tmp_path)
    data = bytearray((tmp_path / name).read_bytes())
    record = len(encode_record(encode_chunk(chunk("a", 0))))
    data[HEADER_BYTES + 2 * record + 30] ^= 0x55  # inside the third record
    (tmp_path / name).write_bytes(bytes(data))
    again = opened(tmp_path)
    got = await read_all(again)
    assert lines(got) == lines([chunk("a", i) for i in (0, 1, 3, 4)])
    assert again.stats.corrupt_records == 1 and again.stats.skipped_bytes == record
    await again.close()


async def test_a_full_spool_says_so_and_has_room_again_once_delivered(tmp_path: Path) -> None:
    spool = opened(tmp_path, max_bytes=2000, segment_bytes=600)
    taken = 0
    while spool.has_room(100):
        spool.append(chunk("a", taken))
        taken += 1
    assert 5 <= taken <= 20 and spool.bytes <= 2000 + 300
    await spool.flush()
    back = await read_all(spool)
    for c in back:
        spool.delivered(c.spooled)
    assert spool.has_room(100)
    await spool.close()


async def test_disk_headroom_is_kept_for_the_positions(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    spool = opened(tmp_path, headroom_bytes=free + (1 << 30))  # over what is free, even if other jobs free some meanwhile
    assert not spool.has_room(1)
    await spool.close()


async def test_an_unwritable_directory_is_counted_and_the_spool_reports_itself_full(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    spool = opened(blocker / "spool")  # makedirs fails: ENOTDIR
    assert not spool.has_room(1) and spool.stats.write_errors == 1 and spool.problem
    await spool.close()


async def test_a_write_error_keeps_the_chunks_and_retries_them(tmp_path: Path) -> None:
    durable = Durable()
    spool = opened(tmp_path, durable, retry_interval=0.01)
    spool.append(chunk("a", 0))
    lane = Path(spool.directory)
    lane.rmdir()
    lane.write_text("in the way")  # no new segment can be created there (ENOTDIR, even for root)
    await spool.flush()
    assert durable.chunks == [] and spool.stats.write_errors >= 1 and not spool.has_room(1) and spool.problem
    lane.unlink()
    lane.mkdir()
    runner = asyncio.create_task(spool.run())
    await asyncio.sleep(0.2)
    runner.cancel()
    assert len(durable.chunks) == 1 and spool.has_room(1)
    await spool.close()


async def test_chunks_read_back_share_their_containers_origin_object(tmp_path: Path) -> None:
    """The sink files a push's entries under (id(origin), stream) and orders streams by size: a new
    Origin per read-back chunk would make each its own stream and reorder a container's lines."""
    spool = opened(tmp_path)
    live = [chunk("a", i) for i in range(3)]
    for c in live:
        c.origin = live[0].origin  # a source keeps one Origin until a rename
        spool.append(c)
    spool.append(chunk("b", 0))
    await spool.flush()
    back = await read_all(spool)
    assert all(c.origin is live[0].origin for c in back[:3]) and back[3].origin is not live[0].origin
    await spool.close()
    again = opened(tmp_path)  # after a restart: one Origin per container among themselves
    back = await read_all(again)
    assert back[0].origin is back[1].origin is back[2].origin and back[3].origin is not back[0].origin
    await again.close()


async def test_records_delivered_beyond_an_undelivered_one_are_not_sent_again_after_a_restart(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1 << 20)
    for i in range(10):
        spool.append(chunk("a", i))
    await spool.flush()
    back = await read_all(spool)
    for c in back[1:]:  # all but the first (a stream Loki throttles holds it)
        spool.delivered(c.spooled)
    await spool.save_cursor()
    spool.abandon()
    again = opened(tmp_path)
    assert lines(await read_all(again)) == lines(back[:1])
    await again.close()


async def test_records_not_yet_written_are_bounded_in_memory_sources_wait_for_the_writer(tmp_path: Path) -> None:
    spool = opened(tmp_path, max_pending_bytes=1000)
    taken = 0
    while spool.has_room(100):  # what a source asks before it reads (while the lane spills)
        spool.append(chunk("a", taken))
        taken += 1
    assert 3 <= taken <= 8 and spool.bytes < 2000  # a slow disk does not pile chunks up in memory
    await spool.flush()
    assert spool.has_room(100)  # written: room again
    await spool.close()
