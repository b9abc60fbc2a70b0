"""One container's trouble stays with that container, and everything opened for it is closed once.

Driven by the fake engine and fake streams of test_registry_fake_engine.py (no Docker): damaged
rotated `.gz` files, exceptions between opening a log and handing it to its reader, exclusions
that change while an inspect waits, and churn of many containers; every descriptor opened under
the test's directory is counted (tests/fdtrack.py)."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from fdtrack import FdTracker
from polling import wait_until
from test_registry_fake_engine import BASE_NS, FakeEngine, FakeStreams, fake_registry, json_record

from collector.config import Config
from collector.docker.containers import ContainerInfo
from collector.docker.discovery import Discovery
from collector.pipeline.entry import Chunk
from collector.pipeline.queue import ChunkQueue
from collector.positions import PositionStore
from collector.sources import heldchain, opening, supervision
from collector.sources.files import InotifyHub
from collector.sources.lifecycle import Phase
from collector.sources.registry import SourceRegistry
from collector.transform.labeling import Profiler


@dataclass
class Rig:
    containers_dir: str
    engine: FakeEngine
    streams: FakeStreams
    registry: SourceRegistry
    hub: InotifyHub
    positions: PositionStore
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (container_id, line)

    def lines(self, cid: str) -> list[str]:
        return [line for who, line in self.delivered if who == cid]

    def json_container(self, cid: str, name: str, records: int = 2, running: bool = True) -> str:
        directory = os.path.join(self.containers_dir, cid)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"{cid}-json.log")
        with open(path, "ab") as handle:
            handle.write(b"".join(json_record(BASE_NS + i, f"{name} {i}") for i in range(records)))
        self.engine.infos[cid] = ContainerInfo(cid, name, "img", log_driver="json-file", running=running)
        return path


@asynccontextmanager
async def running_rig(tmp_path, config: dict[str, Any] | None = None,
                      inspect: Callable[[FakeEngine, str], Awaitable[ContainerInfo | None]] | None = None,
                      discovery: bool = True) -> AsyncIterator[Rig]:
    containers_dir = tmp_path / "containers"
    containers_dir.mkdir(exist_ok=True)
    engine = FakeEngine()
    streams = FakeStreams(engine)
    queue = ChunkQueue(1 << 22)
    positions = PositionStore(str(tmp_path / "positions.json"), 0.05)
    hub = InotifyHub()
    registry = fake_registry(str(containers_dir), queue, streams, positions, hub,
                             (lambda cid: inspect(engine, cid)) if inspect else engine.inspect, engine.is_running,
                             drain_quiet=0.1, profiler=Profiler(msgspec.convert(config or {}, Config, strict=False)))
    rig = Rig(str(containers_dir), engine, streams, registry, hub, positions)

    async def sink() -> None:
        while True:
            chunk: Chunk = await queue.get()
            rig.delivered.extend((chunk.origin.container_id, e.line) for e in chunk.entries)
            positions.acknowledge([chunk])

    async with asyncio.TaskGroup() as group:
        helpers = [group.create_task(hub.run()), group.create_task(sink())]
        registry_task = group.create_task(registry.run())
        await registry.running.wait()
        if discovery:
            follower = Discovery(engine, registry, max_backoff=0.2, relist_interval=3600)
            helpers.append(group.create_task(follower.run()))
            await wait_until(lambda: follower.connected, 10, what="connected")
        try:
            yield rig
        finally:
            registry.stop()
            await registry_task
            for task in helpers:
                task.cancel()
    hub.close()


def damaged_gz(lines: list[bytes]) -> bytes:
    """A gzip whose deflate data is broken after its header (a power cut while dockerd compressed)."""
    whole = gzip.compress(b"".join(lines))
    return whole[:10] + b"\xff" * 64 + whole[74:]


# -- item 1: a damaged rotated .gz ---------------------------------------------------------------

async def test_a_damaged_rotated_gz_is_counted_and_skipped_and_the_registry_lives_on(tmp_path, monkeypatch, caplog) -> None:
    fds = FdTracker(monkeypatch, str(tmp_path))
    async with running_rig(tmp_path) as rig:
        bad, good = "d" * 64, "e" * 64
        path = rig.json_container(bad, "bad")
        with open(f"{path}.1.gz", "wb") as handle:
            handle.write(damaged_gz([json_record(BASE_NS - 10, "lost")]))
        rig.json_container(good, "good")
        rig.engine.emit("start", bad)
        rig.engine.emit("start", good)
        await wait_until(lambda: rig.lines(bad) == ["bad 0", "bad 1"] and rig.lines(good) == ["good 0", "good 1"], 10,
                         what=lambda: f"both read: {rig.delivered}")
        tracked = rig.registry.containers[bad]
        assert tracked.phase is Phase.READING and tracked.mode == "file"
        assert tracked.stats.files_lost == 1 and tracked.stats.errors >= 1
        assert any("damaged" in r.getMessage() for r in caplog.records)
    assert fds.double_closes == [] and fds.leaked() == {}


# -- item 2: one owner for the pre-opened log ----------------------------------------------------

async def test_the_fallback_path_closes_the_preopened_log_exactly_once(tmp_path, monkeypatch) -> None:
    """The file was opened at the start event; the tailer then cannot list its directory
    (permission denied): the container falls back to the stream, and the descriptor held since the
    start event is closed once, not three times."""
    fds = FdTracker(monkeypatch, str(tmp_path))

    def unreadable(path: str, allow_holes: bool = False) -> None:
        raise PermissionError(13, "Permission denied", os.path.dirname(path))

    monkeypatch.setattr(heldchain, "list_chain", unreadable)
    async with running_rig(tmp_path) as rig:
        cid = "f" * 64
        rig.json_container(cid, "web")
        rig.streams.write(cid, BASE_NS + 5, "via the api")
        rig.engine.emit("start", cid)
        await wait_until(lambda: rig.lines(cid) == ["via the api"], 10, what=lambda: f"read: {rig.delivered}")
        tracked = rig.registry.containers[cid]
        assert tracked.mode == "stream" and tracked.mode_reason == "fallback: permission_denied"
        assert rig.registry.fallbacks["permission_denied"] == 1
        assert fds.opened >= 1
    assert fds.double_closes == [] and fds.leaked() == {}


async def test_a_log_opened_at_the_start_event_is_closed_when_shutdown_comes_before_its_inspect(tmp_path, monkeypatch) -> None:
    fds = FdTracker(monkeypatch, str(tmp_path))
    release = asyncio.Event()

    async def slow_inspect(engine: FakeEngine, cid: str) -> ContainerInfo | None:
        await release.wait()
        return await engine.inspect(cid)

    async with running_rig(tmp_path, inspect=slow_inspect, discovery=False) as rig:
        for n, cid in enumerate(("1" * 64, "2" * 64)):
            rig.json_container(cid, f"c{n}")
        rig.registry.started(ContainerInfo("1" * 64, "c0", "img", running=True))
        await wait_until(lambda: fds.opened >= 1, 5, what="opened at the start event")
        await asyncio.sleep(0.05)  # its inspect waits
        rig.registry.started(ContainerInfo("2" * 64, "c1", "img", running=True))
        # Cancelled before its first step (as a task group cancels its children when one fails):
        # its body never runs, so only its owner's done-callback can close what it was given.
        rig.registry._tasks.resolving["2" * 64].cancel()
        await asyncio.sleep(0.05)
        assert list(fds.leaked().values()) == [os.path.join(rig.containers_dir, "1" * 64, f"{'1' * 64}-json.log")]
    assert fds.double_closes == [] and fds.leaked() == {}


async def test_an_exception_between_opening_and_reading_is_isolated_counted_and_retried(tmp_path, monkeypatch, caplog) -> None:
    """Setting up the reader fails (a bug, say) after the log was opened and the tailer subscribed
    to inotify: nothing leaks, the fault is logged once with its traceback and counted by reason,
    and the container is tried again and read."""
    fds = FdTracker(monkeypatch, str(tmp_path))
    monkeypatch.setattr(supervision, "RETRY_BACKOFF", 0.01)
    failures = [RuntimeError("boom")]
    async with running_rig(tmp_path) as rig:
        real_processor = rig.registry._profiler.processor

        def processor(*args: Any) -> Any:
            if failures:
                raise failures.pop()
            return real_processor(*args)

        monkeypatch.setattr(rig.registry._profiler, "processor", processor)
        cid, other = "3" * 64, "4" * 64
        rig.json_container(cid, "web")
        rig.json_container(other, "other")
        rig.engine.emit("start", cid)
        rig.engine.emit("start", other)
        await wait_until(lambda: rig.lines(cid) == ["web 0", "web 1"] and rig.lines(other) == ["other 0", "other 1"], 10,
                         what=lambda: f"both read: {rig.delivered}")
        tracked = rig.registry.containers[cid]
        assert tracked.stats.errors == 1 and rig.registry.faults == {"resolve:RuntimeError": 1}
        assert rig.hub.watch_count == 2  # the failed tailer's subscription was dropped, the new one holds
        failed = [r for r in caplog.records if r.getMessage() == "container setup failed; trying again"]
        assert len(failed) == 1 and failed[0].exc_info is not None
    assert fds.double_closes == [] and fds.leaked() == {}


async def test_a_container_that_keeps_failing_moves_to_the_stream_then_fails_alone(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(supervision, "RETRY_BACKOFF", 0.01)
    fds = FdTracker(monkeypatch, str(tmp_path))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug in the file source")

    monkeypatch.setattr(opening.SourceOpener, "file_source", broken)
    async with running_rig(tmp_path) as rig:
        cid = "5" * 64
        rig.json_container(cid, "web")
        rig.streams.write(cid, BASE_NS + 9, "from the stream")
        rig.engine.emit("start", cid)
        await wait_until(lambda: rig.lines(cid) == ["from the stream"], 10, what=lambda: f"read: {rig.delivered}")
        tracked = rig.registry.containers[cid]
        assert tracked.mode == "stream" and tracked.reason.startswith("setup_failed")
        assert rig.registry.faults["resolve:ValueError"] == supervision.MAX_ATTEMPTS
    assert fds.double_closes == [] and fds.leaked() == {}


# -- item 5: excluded only after the inspect -----------------------------------------------------

@pytest.mark.parametrize("driver", ["json-file", "local"])
async def test_a_container_excluded_after_its_inspect_releases_what_was_opened_for_it(tmp_path, monkeypatch, driver) -> None:
    fds = FdTracker(monkeypatch, str(tmp_path))
    inspecting, release = asyncio.Event(), asyncio.Event()

    async def slow_inspect(engine: FakeEngine, cid: str) -> ContainerInfo | None:
        inspecting.set()
        await release.wait()
        return await engine.inspect(cid)

    async with running_rig(tmp_path, config={"selection": {"exclude": {"names": ["secret-*"]}}}, inspect=slow_inspect) as rig:
        cid = "6" * 64
        if driver == "json-file":
            rig.json_container(cid, "web")
        else:
            rig.engine.infos[cid] = ContainerInfo(cid, "web", "img", log_driver="local", running=True)
        rig.engine.emit("start", cid)
        await asyncio.wait_for(inspecting.wait(), 5)
        rig.engine.infos[cid].name = "secret-web"
        rig.engine.emit("rename", cid, name="secret-web", oldName="/web")
        await wait_until(lambda: rig.registry.containers[cid].info.name == "secret-web", 5, what="renamed")
        if driver == "json-file":
            assert len(fds.leaked()) == 1  # held since the start event
        else:
            await wait_until(lambda: rig.streams.open_connections == 1, 5, what="the early stream request")
        release.set()
        await wait_until(lambda: rig.registry.containers[cid].phase is Phase.SKIPPED, 5, what="skipped")
        assert fds.leaked() == {} and rig.streams.open_connections == 0
    assert fds.double_closes == []


# -- item 7: excluded by name, renamed to an allowed name, restarted -----------------------------

async def test_a_container_excluded_by_name_is_read_after_a_rename_and_a_restart(tmp_path) -> None:
    async with running_rig(tmp_path, config={"selection": {"exclude": {"names": ["tmp-*"]}}}) as rig:
        cid = "7" * 64
        path = rig.json_container(cid, "tmp-web", records=1)
        rig.engine.emit("start", cid)
        await wait_until(lambda: cid in rig.registry.containers and rig.registry.containers[cid].phase is Phase.SKIPPED, 5,
                         what="skipped")
        rig.engine.infos[cid].name = "web"
        rig.engine.emit("rename", cid, name="web", oldName="/tmp-web")
        rig.engine.infos[cid].running = False
        rig.engine.emit("die", cid)
        with open(path, "ab") as handle:
            handle.write(json_record(BASE_NS + 100, "after the restart"))
        rig.engine.infos[cid].running = True
        rig.engine.emit("start", cid)
        await wait_until(lambda: "after the restart" in rig.lines(cid), 10,
                         what=lambda: f"read after the restart: {rig.registry.containers[cid].phase} {rig.delivered}")
        assert rig.registry.containers[cid].mode == "file"


# -- nothing grows: churn ------------------------------------------------------------------------

def table_sizes(rig: Rig) -> dict[str, int]:
    """Every table of the collector's own classes keyed by container, file or directory."""
    registry = rig.registry
    return {
        "containers": len(registry.containers),
        "resolving": len(registry._tasks.resolving),
        "read_upto": len(registry._start_points.read_upto),
        "positions": len(rig.positions._acked),
        "inotify_watches": rig.hub.watch_count,
        "inotify_waiters": len(rig.hub._waiters),
        "inotify_created": len(rig.hub._created),
        "open_streams": rig.streams.open_connections,
        "tasks": len(asyncio.all_tasks()),
    }


async def test_ten_thousand_containers_created_and_destroyed_leave_every_table_at_its_baseline(tmp_path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.WARNING)
    fds = FdTracker(monkeypatch, str(tmp_path))
    async with running_rig(tmp_path) as rig:
        keep = "8" * 64
        rig.json_container(keep, "keeper")
        rig.engine.emit("start", keep)
        await wait_until(lambda: len(rig.lines(keep)) == 2, 10, what="the keeper read")
        baseline = table_sizes(rig)
        total, wave = 10_000, 500
        for start in range(0, total, wave):
            ids = [f"{n:064x}" for n in range(start + 1, start + wave + 1)]
            for n, cid in enumerate(ids):
                if n % 2:
                    rig.json_container(cid, f"c{start + n}", records=1)
                else:
                    rig.engine.infos[cid] = ContainerInfo(cid, f"c{start + n}", "img", log_driver="local", running=True)
                    rig.streams.write(cid, BASE_NS, "x")
                rig.engine.emit("start", cid)
            await wait_until(lambda ids=ids: all(rig.registry.containers.get(c) is not None
                                         and rig.registry.containers[c].phase is not Phase.RESOLVING for c in ids), 30,
                             what="wave routed")
            for cid in ids:
                rig.engine.infos[cid].running = False
                rig.streams.stopped(cid)
                rig.engine.emit("die", cid)
                del rig.engine.infos[cid]
                rig.engine.emit("destroy", cid)
            await wait_until(lambda ids=ids: not any(c in rig.registry.containers for c in ids), 30,
                             what=lambda: f"wave forgotten: {table_sizes(rig)}")
        await wait_until(lambda: table_sizes(rig) == baseline, 10, what=lambda: f"{table_sizes(rig)} != {baseline}")
        print(f"churn of {total} containers: before {baseline}, after {table_sizes(rig)}")
        assert rig.delivered.count((keep, "keeper 0")) == 1
    assert fds.double_closes == [] and fds.leaked() == {}
