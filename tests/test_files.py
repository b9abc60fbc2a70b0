"""The json-file tailer over plain files in a temp dir (no Docker): scripted rotations, restarts,
deletions, inode reuse, truncation and gzip, asserting every record comes out once, in order, and
that each loss is counted. The reader is held back by a closed gate in front of a tiny queue, so
"the reader was behind while Docker rotated" is a state the test sets, not a race it hopes for."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import Callable

import pytest
from polling import wait_until

from collector.pipeline.entry import Chunk, FilePosition, Origin
from collector.pipeline.queue import ChunkQueue
from collector.sources import chainopen, files, heldchain, rotation
from collector.sources.files import FileTailer, InotifyHub, TailerSettings, fingerprint_of
from collector.sources.handles import OwnedFd
from collector.sources.jsonfile import JsonFileParser
from collector.sources.source import SourceStats
from collector.timefmt import rfc3339_nano

BASE_NS = 1_700_000_000_000_000_000


def record(i: int) -> bytes:
    return (json.dumps({"log": f"line {i}\n", "stream": "stdout", "time": rfc3339_nano(BASE_NS + i * 1000)}) + "\n").encode()


def expected(numbers: range | list[int]) -> list[str]:
    return [f"line {i}" for i in numbers]


class Rig:
    """One container's log directory, Docker's rotation done by hand, and a reader behind a gate."""

    def __init__(self, tmp_path) -> None:
        self.dir = tmp_path / ("c" * 64)
        self.dir.mkdir()
        self.path = str(self.dir / f"{'c' * 64}-json.log")
        open(self.path, "xb").close()
        self.written = 0
        self.hub = InotifyHub()
        self.queue = ChunkQueue(1)  # every chunk fills it: the reader waits for the consumer
        self.gate = asyncio.Event()
        self.gate.set()
        self.lines: list[str] = []
        self.positions: list[FilePosition] = []
        self.stats = SourceStats()
        self.tailer: FileTailer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- what Docker does ------------------------------------------------------------------------
    def append(self, count: int, name: str | None = None) -> range:
        first = self.written + 1
        with open(name or self.path, "ab") as handle:
            handle.write(b"".join(record(i) for i in range(first, first + count)))
        self.written += count
        return range(first, first + count)

    def rotate(self, max_file: int, compress: bool = False) -> None:
        """Docker's rotation: drop the oldest, shift .N up, live -> .1, a new live file."""
        ext = ".gz" if compress else ""
        oldest = f"{self.path}.{max_file - 1}{ext}"
        if os.path.exists(oldest):
            os.unlink(oldest)
        for index in range(max_file - 1, 1, -1):
            if os.path.exists(f"{self.path}.{index - 1}{ext}"):
                os.rename(f"{self.path}.{index - 1}{ext}", f"{self.path}.{index}{ext}")
        os.rename(self.path, f"{self.path}.1")
        open(self.path, "xb").close()
        if compress:
            self.compress(f"{self.path}.1")

    @staticmethod
    def compress(name: str) -> None:
        with open(name, "rb") as source:
            data = gzip.compress(source.read())
        with open(f"{name}.gz", "xb") as target:
            target.write(data)
        os.unlink(name)

    def position_after(self, name: str, records: int) -> FilePosition:
        with open(name, "rb") as handle:
            data = handle.read()
        offset = 0
        for _ in range(records):
            offset = data.index(b"\n", offset) + 1
        return FilePosition(os.stat(name).st_ino, offset, fingerprint_of(data))

    # -- the reader ------------------------------------------------------------------------------
    def start(self, position: FilePosition | None = None, from_oldest: bool = False, chunk: int = 4096,
              before_run: Callable[[FileTailer], object] | None = None, preopened: OwnedFd | None = None) -> FileTailer:
        self.tailer = FileTailer(
            self.path, Origin("c" * 64, {}), self.queue, self.hub,
            TailerSettings(read_chunk_bytes=chunk, poll_interval=0.2, drain_quiet=0.2),
            JsonFileParser(), position, self.stats, preopened, from_oldest,
        )
        if before_run is not None:
            before_run(self.tailer)
        self._tasks = [asyncio.create_task(self.hub.run()), asyncio.create_task(self._consume()),
                       asyncio.create_task(self.tailer.run())]
        return self.tailer

    async def _consume(self) -> None:
        while True:
            await self.gate.wait()
            chunk: Chunk = await self.queue.get()
            self.lines.extend(entry.line for entry in chunk.entries)
            assert isinstance(chunk.position, FilePosition)
            self.positions.append(chunk.position)

    async def stop(self) -> None:
        for task in reversed(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.hub.close()

    async def wait_lines(self, count: int, timeout: float = 10) -> None:
        await wait_until(lambda: len(self.lines) >= count, timeout,
                         what=lambda: f"{count} lines, got {len(self.lines)}: {self.lines[-3:]} (lost files {self.stats.files_lost})")

    async def settle(self) -> None:
        """Let the reader look around a few times (polls at 0.2 s): nothing more must arrive."""
        await asyncio.sleep(0.8)


@pytest.fixture
async def rig(tmp_path):
    made = Rig(tmp_path)
    yield made
    await made.stop()


async def test_follows_rotations_while_reading(rig: Rig) -> None:
    rig.append(5)
    rig.start()
    await rig.wait_lines(5)
    for _ in range(3):
        rig.rotate(max_file=3)
        rig.append(5)
        await rig.wait_lines(rig.written)
    await rig.settle()
    assert rig.lines == expected(range(1, 21)) and rig.stats.files_lost == 0
    assert all(position.fingerprint for position in rig.positions)


async def test_restart_after_the_saved_file_was_deleted_reads_every_rotated_file_oldest_first(rig: Rig) -> None:
    rig.append(10)
    saved = rig.position_after(rig.path, 5)
    for _ in range(3):  # max-file=3: the saved file goes at the third rotation
        rig.rotate(max_file=3)
        rig.append(10)
    # (the new live file often gets the deleted file's inode back: only its first record tells them apart)
    assert saved not in [rig.position_after(name, 5) for name in (rig.path, f"{rig.path}.1", f"{rig.path}.2")]
    rig.start(saved)
    await rig.wait_lines(30)
    await rig.settle()
    assert rig.lines == expected(range(11, 41))
    assert rig.stats.files_lost == 1  # the saved file, deleted with whatever was left in it


async def test_restart_resumes_inside_a_rotated_file_then_reads_the_newer_ones(rig: Rig) -> None:
    rig.append(10)
    saved = rig.position_after(rig.path, 5)
    for _ in range(2):
        rig.rotate(max_file=5)
        rig.append(10)
    rig.start(saved)
    await rig.wait_lines(25)
    await rig.settle()
    assert rig.lines == expected(range(6, 31)) and rig.stats.files_lost == 0


async def test_a_reused_inode_with_another_first_record_is_a_new_file(rig: Rig) -> None:
    rig.append(10)
    rig.rotate(max_file=3)
    rig.append(10)
    live = rig.position_after(rig.path, 3)
    # The saved file had this inode but began with another record: Docker deleted it and the
    # new live file got its inode back.
    saved = FilePosition(live.inode, live.offset, live.fingerprint ^ 1)
    rig.start(saved)
    await rig.wait_lines(20)
    await rig.settle()
    assert rig.lines == expected(range(1, 21)) and rig.stats.files_lost == 1


async def test_a_reader_more_than_max_file_rotations_behind_reads_what_is_left_and_counts_the_rest(rig: Rig) -> None:
    rig.append(300)  # many chunks: the reader stops inside this file
    rig.gate.clear()
    rig.start()
    await wait_until(lambda: rig.queue.nbytes > 0, 5, what="first chunk queued")
    rig.rotate(max_file=2)
    lost = rig.append(50)
    rig.rotate(max_file=2)  # the file with `lost` becomes .1 ...
    rig.append(50)
    rig.rotate(max_file=2)  # ... and is deleted: nobody read it
    rig.append(50)
    rig.gate.set()
    await rig.wait_lines(400)
    await rig.settle()
    assert rig.lines == expected([i for i in range(1, 451) if i not in lost])
    assert rig.stats.files_lost == 1


async def test_a_reader_behind_holds_the_newer_files_it_sees_so_their_deletion_loses_nothing(rig: Rig) -> None:
    rig.append(300)
    rig.gate.clear()
    rig.start()
    await wait_until(lambda: rig.queue.nbytes > 0, 5, what="first chunk queued")
    rig.rotate(max_file=2)
    rig.append(50)
    await asyncio.sleep(0.1)  # the hub reads the events: the reader is told the directory changed
    taken = rig.queue.get_nowait()  # one chunk through: the reader reads the next one, looking around first
    assert taken is not None
    await wait_until(lambda: rig.queue.nbytes > 0, 5, what="next chunk queued")
    rig.rotate(max_file=2)  # the file with lines 301..350 becomes .1 ...
    rig.append(50)
    rig.rotate(max_file=2)  # ... and is deleted before the reader got there
    rig.append(50)
    rig.gate.set()
    await rig.wait_lines(450 - len(taken.entries))
    await rig.settle()
    assert rig.lines == expected(range(len(taken.entries) + 1, 451)) and rig.stats.files_lost == 0


async def test_two_rotations_before_a_read(rig: Rig) -> None:
    rig.append(200)
    rig.gate.clear()
    rig.start()
    await wait_until(lambda: rig.queue.nbytes > 0, 5, what="first chunk queued")
    for _ in range(2):
        rig.rotate(max_file=4)
        rig.append(20)
    rig.gate.set()
    await rig.wait_lines(240)
    await rig.settle()
    assert rig.lines == expected(range(1, 241)) and rig.stats.files_lost == 0


async def test_a_record_written_between_the_last_read_and_the_rename_is_read(rig: Rig, monkeypatch) -> None:
    rig.append(5)
    rig.start()
    await rig.wait_lines(5)
    real_stat = os.stat
    armed = [True]

    def stat_racing_docker(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Docker writes one more record into the file we hold, then rotates, just before we look.
        if armed[0] and os.fspath(name) == rig.path:
            armed[0] = False
            rig.append(1)
            rig.rotate(max_file=3)
            rig.append(2)
        return real_stat(name, *args, **kwargs)

    monkeypatch.setattr(files.os, "stat", stat_racing_docker)
    await wait_until(lambda: not armed[0], 5, what="the reader to look at the live file")
    await rig.wait_lines(8)
    await rig.settle()
    assert rig.lines == expected(range(1, 9))


class RotatingOnOpen:
    """OwnedFd.open that lets Docker rotate once, just before the `at`-th open of `name`: between
    the reader's listing of the chain and its opening the files by name (tiny max-size, heavy load)."""

    def __init__(self, rig: Rig, name: str, at: int = 1) -> None:
        self.rig, self.name, self.left = rig, name, at
        self.raced = False

    def open(self, path: str) -> OwnedFd:
        if path == self.name and not self.raced:
            self.left -= 1
            if self.left == 0:
                self.raced = True
                self.rig.rotate(max_file=3)
                self.rig.append(10)
        return OwnedFd.open(path)


async def test_a_rotation_between_listing_the_chain_and_opening_the_files_skips_nothing(rig: Rig, monkeypatch) -> None:
    rig.append(5)
    rig.start()
    await rig.wait_lines(5)
    racing = RotatingOnOpen(rig, rig.path)
    monkeypatch.setattr(rotation, "OwnedFd", racing)
    rig.rotate(max_file=3)  # lines 6..15 in the new live file, listed as the one after ours ...
    rig.append(10)
    await wait_until(lambda: racing.raced, 5, what="the reader to open the live file")
    # ... but opened by its name after the next rotation: it is .1 now, lines 16..25 are live
    await rig.wait_lines(20)
    await rig.settle()
    assert rig.lines == expected(range(1, 26)) and rig.stats.files_lost == 0


async def test_a_rotation_between_finding_the_saved_file_and_opening_it_skips_nothing(rig: Rig, monkeypatch) -> None:
    rig.append(10)
    saved = rig.position_after(rig.path, 5)
    rig.rotate(max_file=4)
    rig.append(10)
    # The saved file is found as .1; Docker rotates before it is opened again to be read.
    monkeypatch.setattr(chainopen, "OwnedFd", RotatingOnOpen(rig, f"{rig.path}.1", at=2))
    rig.start(saved)
    await rig.wait_lines(25)
    await rig.settle()
    assert rig.lines == expected(range(6, 31)) and rig.stats.files_lost == 0


async def test_a_rotation_while_the_chain_is_opened_keeps_the_file_held_since_the_start_event(rig: Rig, monkeypatch) -> None:
    rig.append(10)
    rig.rotate(max_file=3)
    held = OwnedFd.open(rig.path)  # what the registry opens when the start event arrives
    rig.append(10)
    monkeypatch.setattr(chainopen, "OwnedFd", RotatingOnOpen(rig, f"{rig.path}.1"))
    rig.start(from_oldest=True, preopened=held)  # opened again after the rotation: the held file is .1 now
    await rig.wait_lines(30)
    await rig.settle()
    assert rig.lines == expected(range(1, 31)) and rig.stats.files_lost == 0


async def test_no_fixed_cap_on_rotated_files(rig: Rig) -> None:
    for _ in range(12):
        rig.append(3)
        rig.rotate(max_file=13)
    rig.append(3)
    rig.start(from_oldest=True)
    await rig.wait_lines(39)
    await rig.settle()
    assert rig.lines == expected(range(1, 40))


async def test_start_at_window_is_found_in_a_rotated_file(rig: Rig) -> None:
    for _ in range(3):
        rig.append(10)
        rig.rotate(max_file=5)
    rig.append(10)
    found: list[tuple[int, int, int]] = []
    rig.start(from_oldest=True, before_run=lambda t: found.append(t.start_at_time(BASE_NS + 25 * 1000)))
    await rig.wait_lines(16)
    await rig.settle()
    assert rig.lines == expected(range(25, 41)) and found[0][0] > 0


async def test_start_at_end_skips_the_rotated_files(rig: Rig) -> None:
    rig.append(10)
    rig.rotate(max_file=5)
    rig.append(10)
    rig.start(from_oldest=True, before_run=lambda t: t.start_at_end())
    await rig.settle()
    rig.append(2)
    await rig.wait_lines(2)
    await rig.settle()
    assert rig.lines == expected(range(21, 23))


async def test_the_file_held_since_the_start_event_is_read_first_even_when_rotated_away(rig: Rig) -> None:
    held = OwnedFd.open(rig.path)  # what the registry opens when the start event arrives
    rig.append(10)
    for _ in range(2):  # max-file=2: the held file is rotated to .1, then deleted
        rig.rotate(max_file=2)
        rig.append(10)
    rig.start(from_oldest=True, preopened=held)
    await rig.wait_lines(30)
    await rig.settle()
    assert rig.lines == expected(range(1, 31)) and rig.stats.files_lost == 0


async def test_a_rotated_file_removed_by_hand_leaves_a_hole_that_does_not_stall_the_reader(rig: Rig) -> None:
    for _ in range(3):
        rig.append(5)
        rig.rotate(max_file=5)
    rig.append(5)
    os.unlink(f"{rig.path}.2")  # lines 6..10
    rig.start(from_oldest=True)
    await rig.wait_lines(15)
    rig.gate.clear()
    rig.rotate(max_file=5)  # the hole moves with the rotation: .4 .2 .1 and live
    rig.append(5)
    rig.gate.set()
    await rig.wait_lines(20, timeout=30)
    await rig.settle()
    assert rig.lines == expected([*range(1, 6), *range(11, 26)])


async def test_truncation_reads_again_from_the_start(rig: Rig) -> None:
    rig.append(5)
    rig.start()
    await rig.wait_lines(5)
    os.truncate(rig.path, 0)
    rig.append(2)
    await rig.wait_lines(7)
    assert rig.lines == expected(range(1, 8)) and rig.stats.truncations == 1


async def test_restart_reads_rotated_gzip_files_from_the_saved_offset(rig: Rig) -> None:
    rig.append(10)
    saved = rig.position_after(rig.path, 5)
    for _ in range(3):
        rig.rotate(max_file=5, compress=True)
        rig.append(10)
    assert os.path.exists(f"{rig.path}.3.gz") and not os.path.exists(f"{rig.path}.3")
    rig.start(saved)
    await rig.wait_lines(35)
    await rig.settle()
    assert rig.lines == expected(range(6, 41)) and rig.stats.files_lost == 0
    assert all(position.fingerprint for position in rig.positions)  # a restart finds each file again


async def test_a_gzip_file_that_ends_early_is_waited_for_not_lost(rig: Rig) -> None:
    rig.append(100)
    rig.rotate(max_file=3)
    rig.append(10)
    rotated = f"{rig.path}.1"
    with open(rotated, "rb") as handle:
        whole = gzip.compress(handle.read())
    os.unlink(rotated)
    with open(f"{rotated}.gz", "wb") as handle:  # Docker is still compressing it
        handle.write(whole[: len(whole) // 2])
    rig.start(from_oldest=True)
    await rig.settle()
    assert rig.stats.files_lost == 0
    with open(f"{rotated}.gz", "ab") as handle:
        handle.write(whole[len(whole) // 2:])
    await rig.wait_lines(110)
    await rig.settle()
    assert rig.lines == expected(range(1, 111)) and rig.stats.files_lost == 0


async def test_a_handle_held_on_a_file_that_gets_compressed_keeps_reading_it(rig: Rig) -> None:
    rig.append(300)
    rig.gate.clear()
    rig.start()
    await wait_until(lambda: rig.queue.nbytes > 0, 5, what="first chunk queued")
    rig.rotate(max_file=3, compress=True)
    rig.append(10)
    rig.rotate(max_file=3, compress=True)
    rig.append(10)
    rig.gate.set()
    await rig.wait_lines(320)
    await rig.settle()
    assert rig.lines == expected(range(1, 321)) and rig.stats.files_lost == 0


async def test_a_backlogged_reader_yields_between_chunks(tmp_path) -> None:
    rig = Rig(tmp_path)
    rig.queue = ChunkQueue(1 << 30)  # room for everything: the reader never waits on the queue
    rig.append(20000)  # ~1.6 MB, ~400 chunks of 4 KiB
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_work())
    try:
        tailer = rig.start()
        await wait_until(lambda: tailer.offset >= os.path.getsize(rig.path), 20, interval=0.01, what="file read")
        # Without a yield per chunk the whole file is read in one turn of the loop.
        assert turns > 100, f"other tasks ran {turns} times while ~400 chunks were read"
    finally:
        ticker.cancel()
        await rig.stop()


async def test_many_tailers_held_back_by_a_full_queue_hold_nothing_read(tmp_path) -> None:
    """Memory stays bounded by the queue, not by the number of busy containers: a tailer waits for
    room before it reads (each used to read and parse a chunk, then wait holding it)."""
    hub = InotifyHub()
    queue = ChunkQueue(64 * 1024)
    await queue.put(Chunk(Origin("filler", {}), [], 64 * 1024))  # full: Loki is down
    tailers, tasks = [], [asyncio.create_task(hub.run())]
    for n in range(20):
        directory = tmp_path / f"{n:064d}"
        directory.mkdir()
        path = str(directory / f"{n:064d}-json.log")
        with open(path, "wb") as handle:
            handle.write(b"".join(record(i) for i in range(1, 2001)))
        tailer = FileTailer(path, Origin(f"{n:064d}", {}), queue, hub,
                            TailerSettings(read_chunk_bytes=16384, poll_interval=0.2), JsonFileParser(), None, SourceStats())
        tailers.append(tailer)
        tasks.append(asyncio.create_task(tailer.run()))
    try:
        await asyncio.sleep(0.5)
        assert [t.offset for t in tailers] == [0] * 20 and queue.nbytes == 64 * 1024
        lines: dict[str, list[str]] = {}
        peak = 0
        while sum(map(len, lines.values())) < 20 * 2000:
            chunk = await asyncio.wait_for(queue.get(), 10)
            lines.setdefault(chunk.origin.container_id, []).extend(entry.line for entry in chunk.entries)
            peak = max(peak, queue.nbytes)
            await asyncio.sleep(0)
        assert all(found == expected(range(1, 2001)) for name, found in lines.items() if name != "filler")
        assert peak <= 64 * 1024 + 16384 + 200, "one read's worth over the bound at most"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        hub.close()


async def test_ignored_for_a_removed_watch_does_not_drop_the_new_one(tmp_path) -> None:
    hub = InotifyHub()
    runner = asyncio.create_task(hub.run())
    try:
        directory = str(tmp_path)
        first = hub.subscribe(directory)
        hub.unsubscribe(directory, first)  # the kernel queues IN_IGNORED for this watch ...
        second = hub.subscribe(directory)  # ... which the hub reads after the new watch exists
        await asyncio.sleep(0.2)
        assert hub.watch_count == 1
        second.clear()
        open(os.path.join(directory, "x"), "wb").close()
        await wait_until(second.is_set, 5, what="the new watch still delivers events")
        hub.unsubscribe(directory, second)
        assert hub.watch_count == 0
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        hub.close()


async def test_queue_overflow_wakes_every_subscriber(tmp_path) -> None:
    quiet, busy = tmp_path / "quiet", tmp_path / "busy"
    quiet.mkdir()
    busy.mkdir()
    hub = InotifyHub()
    wake = hub.subscribe(str(quiet))
    hub.subscribe(str(busy))
    wake.clear()
    wake.structure = False
    with open("/proc/sys/fs/inotify/max_queued_events") as handle:
        limit = int(handle.read())
    if limit > 200_000:
        pytest.skip(f"max_queued_events is {limit}: too many events to overflow it here")
    for index in range(limit + 10):  # more events than the kernel queues: IN_Q_OVERFLOW
        os.close(os.open(busy / str(index % 64), os.O_WRONLY | os.O_CREAT))
    runner = asyncio.create_task(hub.run())
    try:
        await wait_until(wake.is_set, 10, what="the quiet directory's tailer woken by the overflow")
        assert wake.structure and hub.overflows == 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        hub.close()


def damage(name: str, at: int) -> None:
    """Overwrite a stretch of a .gz the way a power cut mid-compress or a bad sector does."""
    with open(name, "r+b") as handle:
        handle.seek(at)
        handle.write(b"\xff" * 64)


async def test_a_damaged_rotated_gz_is_counted_and_skipped_at_open(rig: Rig) -> None:
    rig.append(10)
    rig.rotate(max_file=5, compress=True)
    rig.append(10)
    rig.rotate(max_file=5, compress=True)  # lines 1..10 in .2.gz, 11..20 in .1.gz
    rig.append(10)
    damage(f"{rig.path}.2.gz", 10)  # right after the gzip header: not even its first record inflates
    rig.start(from_oldest=True)
    await rig.wait_lines(20)
    await rig.settle()
    assert rig.lines == expected(range(11, 31))
    assert rig.stats.files_lost == 1 and rig.stats.errors == 1 and "damaged" in rig.stats.last_error


async def test_a_rotated_gz_damaged_past_its_start_is_read_up_to_the_damage_then_skipped(rig: Rig) -> None:
    # Incompressible lines, so that the damage lies past the first raw block zlib is given.
    noise = [os.urandom(600).hex() for _ in range(300)]
    with open(rig.path, "ab") as handle:
        for i, text in enumerate(noise):
            handle.write((json.dumps({"log": f"{text}\n", "stream": "stdout", "time": rfc3339_nano(BASE_NS + i)}) + "\n").encode())
    rig.rotate(max_file=3, compress=True)
    rig.written = 300
    rig.append(5)
    gz = f"{rig.path}.1.gz"
    assert os.path.getsize(gz) > 150_000
    damage(gz, 120_000)
    rig.start(from_oldest=True)
    await wait_until(lambda: rig.lines[-5:] == expected(range(301, 306)), 10, what=lambda: f"the live file read ({len(rig.lines)})")
    await rig.settle()
    read_of_gz = rig.lines[:-5]
    assert 0 < len(read_of_gz) < 300 and read_of_gz == noise[: len(read_of_gz)]
    assert rig.stats.files_lost == 1 and rig.stats.errors >= 1


@pytest.mark.parametrize("failing", [1, 2], ids=["on-a-file-it-opened", "on-the-held-file"])
async def test_a_tailer_failing_while_it_opens_closes_every_file_it_opened_once(rig: Rig, tmp_path, monkeypatch, failing) -> None:
    from fdtrack import FdTracker

    rig.append(10)
    rig.rotate(max_file=5)
    rig.append(10)
    fds = FdTracker(monkeypatch, str(tmp_path))
    calls = []

    def failing_fingerprint(fd: int, gz: bool) -> int:
        calls.append(fd)
        if len(calls) == failing:
            raise RuntimeError("unexpected")
        return 1

    monkeypatch.setattr(heldchain, "fingerprint_fd", failing_fingerprint)
    held = OwnedFd.open(rig.path)
    with pytest.raises(RuntimeError):
        FileTailer(rig.path, Origin("c" * 64, {}), rig.queue, rig.hub, TailerSettings(4096, 0.2), JsonFileParser(), None,
                   rig.stats, held, from_oldest=True)
    assert held.closed and fds.opened == 2 and fds.leaked() == {} and fds.double_closes == []
    assert rig.hub.watch_count == 0  # its inotify subscription was dropped too


async def test_an_idle_files_safety_poll_backs_off_and_a_write_brings_it_back(tmp_path, monkeypatch) -> None:
    """500 idle containers polled every poll_interval were most of the idle CPU: an idle file's
    poll backs off to MAX_POLL_BACKOFF x poll_interval; a write is read at once and resets it."""
    polls: list[float] = []
    real_look_ahead = files.look_ahead

    def counting_look_ahead(*args, **kwargs):  # a safety poll looks for rotations
        polls.append(asyncio.get_running_loop().time())
        return real_look_ahead(*args, **kwargs)

    monkeypatch.setattr(files, "look_ahead", counting_look_ahead)
    hub = InotifyHub()
    queue = ChunkQueue(1 << 20)
    directory = tmp_path / ("a" * 64)
    directory.mkdir()
    path = str(directory / ("a" * 64 + "-json.log"))
    with open(path, "wb") as handle:
        handle.write(record(1))
    tailer = FileTailer(path, Origin("a" * 64, {}), queue, hub, TailerSettings(read_chunk_bytes=16384, poll_interval=0.05),
                        JsonFileParser(), None, SourceStats())
    tasks = [asyncio.create_task(hub.run()), asyncio.create_task(tailer.run())]
    try:
        await asyncio.wait_for(queue.get(), 5)
        await asyncio.sleep(2.0)
        gaps = [later - earlier for earlier, later in zip(polls, polls[1:], strict=False)]
        assert len(polls) < 15, f"{len(polls)} polls in 2 s at a 0.05 s poll_interval: no backoff"  # 40 without
        assert gaps and max(gaps) >= 0.15
        assert max(gaps) <= 0.05 * files.MAX_POLL_BACKOFF + 0.1  # bounded: a missed event is still found
        with open(path, "ab") as handle:
            handle.write(record(2))
        chunk = await asyncio.wait_for(queue.get(), 1)
        assert [entry.line for entry in chunk.entries] == expected([2])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        hub.close()
