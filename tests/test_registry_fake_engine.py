"""The registry and discovery driven by a scripted fake engine: no Docker, no sockets.

json-file containers are plain files in a temp dir (read by the real tailer and inotify); streaming
containers are served by a fake log-stream client that speaks the Engine API's framing.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from polling import wait_until

from collector.config import Config
from collector.docker.containers import ContainerInfo
from collector.docker.discovery import Discovery
from collector.docker.logstream import LogsUnavailable
from collector.pipeline.entry import Chunk
from collector.pipeline.queue import ChunkQueue
from collector.positions import PositionStore
from collector.sources.files import InotifyHub, TailerSettings
from collector.sources.lifecycle import Phase
from collector.sources.registry import RegistrySettings, SourceRegistry
from collector.sources.stream import StreamSettings
from collector.timefmt import rfc3339_nano
from collector.transform.labeling import Profiler

BASE_NS = 1_795_000_000_000_000_000


class FakeResponse:
    def __init__(self) -> None:
        self.content = asyncio.StreamReader()
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeStreams:
    """Engine API log streams of scripted containers: frames of (ts_ns, text)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.records: dict[str, list[tuple[int, bytes]]] = {}
        self.responses: dict[str, list[FakeResponse]] = {}
        self.requests: list[tuple[str, str, bool]] = []

    def write(self, cid: str, ts_ns: int, text: str) -> None:
        frame = self._frame(ts_ns, text)
        self.records.setdefault(cid, []).append((ts_ns, frame))
        for response in self.responses.get(cid, []):
            if not response.closed and not response.content.at_eof():
                response.content.feed_data(frame)

    def stopped(self, cid: str) -> None:
        for response in self.responses.get(cid, []):
            if not response.content.at_eof():
                response.content.feed_eof()

    @staticmethod
    def _frame(ts_ns: int, text: str) -> bytes:
        payload = f"{rfc3339_nano(ts_ns)} {text}\n".encode()
        return bytes([1, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload

    async def connect(self, cid: str, since: str, follow: bool = True) -> FakeResponse:
        self.requests.append((cid, since, follow))
        if cid not in self.engine.infos:
            raise LogsUnavailable(404, "No such container")
        seconds, nanos = since.split(".")
        since_ns = int(seconds) * 1_000_000_000 + int(nanos)
        response = FakeResponse()
        for ts_ns, frame in self.records.get(cid, []):
            if ts_ns >= since_ns:
                response.content.feed_data(frame)
        if not follow or not self.engine.infos[cid].running:
            response.content.feed_eof()
        self.responses.setdefault(cid, []).append(response)
        return response

    @asynccontextmanager
    async def open(self, cid: str, since: str, follow: bool = True, opened: Any = None) -> AsyncIterator[Any]:
        response = opened or await self.connect(cid, since, follow)
        try:
            yield response.content
        finally:
            response.close()

    @property
    def open_connections(self) -> int:
        return sum(not r.closed for rs in self.responses.values() for r in rs)


class FakeEngine:
    """Scripted Docker: containers, an events stream the test feeds, and what discovery asked."""

    def __init__(self) -> None:
        self.infos: dict[str, ContainerInfo] = {}
        self.events_queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.since_asked: list[str] = []
        self.clock = BASE_NS

    async def host_name(self) -> str:
        return "fakehost"

    async def list_states(self) -> dict[str, tuple[str, bool]]:
        return {cid: (info.name, info.running) for cid, info in self.infos.items()}

    async def inspect(self, cid: str) -> ContainerInfo | None:
        info = self.infos.get(cid)
        if info is None:
            return None
        return ContainerInfo(info.id, info.name, info.image, dict(info.labels), info.log_driver, info.log_path,
                             info.tty, info.running, info.started_at)

    async def is_running(self, cid: str) -> bool | None:
        info = self.infos.get(cid)
        return info is not None and info.running

    @asynccontextmanager
    async def events(self, since: str = "") -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        self.since_asked.append(since)

        async def stream() -> AsyncIterator[dict[str, Any]]:
            while (event := await self.events_queue.get()) is not None:
                yield event

        yield stream()

    def emit(self, action: str, cid: str, **attributes: str) -> None:
        """An event as Docker sends it (only when connected: else only the state changes)."""
        self.clock += 1_000_000
        info = self.infos[cid] if cid in self.infos else None
        attrs = {"name": info.name if info else "", "image": "img", **attributes}
        self.events_queue.put_nowait({"Type": "container", "Action": action, "Actor": {"ID": cid, "Attributes": attrs},
                                      "time": self.clock // 1_000_000_000, "timeNano": self.clock})

    def disconnect(self) -> None:
        self.events_queue.put_nowait(None)


def fake_registry(containers_dir: str, queue: ChunkQueue, streams: Any, positions: PositionStore, hub: InotifyHub,
                  inspect: Any, is_running: Any, *, drain_quiet: float = 0.2, stream_backoff: float = 0.2,
                  mode: str = "auto", profiler: Profiler | None = None) -> SourceRegistry:
    """The registry as the app builds it, on fakes: small reads, short timeouts (one set-up for the
    registry tests in this file, test_registry_faults.py and test_stream_losses.py)."""
    return SourceRegistry(
        queue=queue, hub=hub, streams=streams, positions=positions,
        settings=RegistrySettings(
            containers_dir=containers_dir,
            tailer=TailerSettings(read_chunk_bytes=65536, poll_interval=0.5, drain_quiet=drain_quiet),
            stream=StreamSettings(idle_timeout=30, drain_timeout=2, max_line_bytes=65536, max_backoff=stream_backoff),
            max_line_bytes=65536, own_id=None, start_at=None, mode=mode,
        ),
        inspect=inspect, is_running=is_running, profiler=profiler or Profiler(Config()),
    )


def json_record(ts_ns: int, text: str) -> bytes:
    return (json.dumps({"log": text + "\n", "stream": "stdout", "time": rfc3339_nano(ts_ns)}) + "\n").encode()


async def test_scripted_lifecycle_start_die_restart_rename_reconnect_destroy(tmp_path) -> None:
    containers_dir = tmp_path / "containers"
    containers_dir.mkdir()
    engine = FakeEngine()
    streams = FakeStreams(engine)
    queue = ChunkQueue(1 << 20)
    positions = PositionStore(str(tmp_path / "positions.json"), 0.05)
    hub = InotifyHub()
    registry = fake_registry(str(containers_dir), queue, streams, positions, hub, engine.inspect, engine.is_running,
                             drain_quiet=2.0)
    discovery = Discovery(engine, registry, max_backoff=0.2, relist_interval=3600)
    delivered: list[tuple[str, str]] = []  # (container_name, line)

    async def sink() -> None:
        while True:
            chunk: Chunk = await queue.get()
            delivered.extend((chunk.origin.labels["container_name"], e.line) for e in chunk.entries)
            positions.acknowledge([chunk])

    file_id, stream_id = "a" * 64, "b" * 64
    (containers_dir / file_id).mkdir()
    log_path = containers_dir / file_id / f"{file_id}-json.log"
    log_path.write_bytes(json_record(BASE_NS + 1, "f1") + json_record(BASE_NS + 2, "f2"))
    engine.infos[file_id] = ContainerInfo(file_id, "web", "img", log_driver="json-file", running=True)

    def append(text: str, ts_ns: int) -> None:
        with open(log_path, "ab") as handle:
            handle.write(json_record(ts_ns, text))

    def lines(name: str) -> list[str]:
        return [line for who, line in delivered if who == name]

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(hub.run()), group.create_task(sink())]
        registry_task = group.create_task(registry.run())
        await registry.running.wait()
        tasks.append(group.create_task(discovery.run()))
        await wait_until(lambda: discovery.connected, 10, what="connected")

        # Found running at startup: read from its first byte (start_at: all).
        await wait_until(lambda: lines("web") == ["f1", "f2"], 10, what=lambda: f"web lines {delivered}")
        tracked = registry.containers[file_id]
        first_source = tracked.source
        assert tracked.phase is Phase.READING and first_source is not None and first_source.kind == "file"

        # die: the source drains (it is not cancelled); start again at once: the same source continues.
        engine.infos[file_id].running = False
        engine.emit("die", file_id)
        await wait_until(lambda: tracked.phase is Phase.DRAINING, 5, what="draining")
        engine.infos[file_id].running = True
        engine.emit("start", file_id)
        await wait_until(lambda: tracked.phase is Phase.READING, 5, what="reading again")
        assert tracked.source is first_source  # continued, not reopened
        append("f3", BASE_NS + 3)
        await wait_until(lambda: lines("web") == ["f1", "f2", "f3"], 10, what=lambda: f"f3 once {delivered}")

        # rename: later lines carry the new name, nothing repeats.
        engine.infos[file_id].name = "web2"
        engine.emit("rename", file_id, name="web2", oldName="/web")
        await wait_until(lambda: tracked.info.name == "web2", 5, what="renamed")
        append("f4", BASE_NS + 4)
        await wait_until(lambda: lines("web2") == ["f4"], 10, what="f4 under the new name")

        # The events connection drops; meanwhile a streaming container starts and writes.
        last_event_ns = engine.clock
        engine.disconnect()
        await wait_until(lambda: len(engine.since_asked) == 2, 10, what="reconnect")
        seconds, nanos = divmod(last_event_ns, 1_000_000_000)
        assert engine.since_asked[1] == f"{seconds}.{nanos:09d}"  # replay from the last event seen
        engine.infos[stream_id] = ContainerInfo(stream_id, "api", "img", log_driver="local", running=True)
        streams.write(stream_id, BASE_NS + 10, "s1")
        streams.write(stream_id, BASE_NS + 11, "s2")
        engine.emit("start", stream_id)  # as the replay would deliver it
        await wait_until(lambda: lines("api") == ["s1", "s2"], 10, what=lambda: f"api lines {delivered}")
        stream_tracked = registry.containers[stream_id]
        assert stream_tracked.source is not None and stream_tracked.source.kind == "stream"
        streams.write(stream_id, BASE_NS + 12, "s3")
        await wait_until(lambda: lines("api") == ["s1", "s2", "s3"], 10, what="s3 followed")

        # The streaming container dies: its stream ends by itself; the source ends, nothing is lost.
        engine.infos[stream_id].running = False
        engine.emit("die", stream_id)
        streams.write(stream_id, BASE_NS + 13, "s4")  # written as it exited
        streams.stopped(stream_id)
        await wait_until(lambda: stream_tracked.phase is Phase.STOPPED, 10, what="stream source ended")
        assert lines("api") == ["s1", "s2", "s3", "s4"]
        assert streams.open_connections == 0  # every response closed when its reader ended

        # destroy: the file source drains what is left, ends, and the container is forgotten.
        append("f5", BASE_NS + 5)
        engine.infos[file_id].running = False
        engine.emit("die", file_id)
        del engine.infos[file_id]
        engine.emit("destroy", file_id, name="web2")
        os.unlink(log_path)  # Docker removes the file; the open handle still reads it to the end
        await wait_until(lambda: file_id not in registry.containers, 10, what="web forgotten")
        assert lines("web2") == ["f4", "f5"]
        assert positions.get(file_id) is None
        assert hub.watch_count == 0
        assert registry.totals().lines == 5 + 4

        registry.stop()
        await registry_task
        for task in tasks:
            task.cancel()
    hub.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(("file:", "stream:", "resolve:"))]


async def test_a_containers_trimmed_labels_are_counted_and_logged_once(tmp_path, caplog) -> None:
    """The profile is made twice on the way in (at the start event, to skip an excluded container at
    once; after the inspect, to route it): what Loki's limits cut is reported once, by the second."""
    containers_dir = tmp_path / "containers"
    containers_dir.mkdir()
    engine = FakeEngine()
    hub = InotifyHub()
    config = msgspec.convert({"labels": {"max_label_names": 4}}, Config, strict=False)
    registry = SourceRegistry(
        queue=ChunkQueue(1 << 20), hub=hub, streams=FakeStreams(engine),  # type: ignore[arg-type]
        positions=PositionStore(str(tmp_path / "positions.json"), 0.05),
        settings=RegistrySettings(
            containers_dir=str(containers_dir),
            tailer=TailerSettings(read_chunk_bytes=65536, poll_interval=0.5),
            stream=StreamSettings(idle_timeout=30, drain_timeout=2, max_line_bytes=65536, max_backoff=0.2),
            max_line_bytes=65536, own_id=None, start_at=None,
        ),
        inspect=engine.inspect, is_running=engine.is_running, profiler=Profiler(config),
    )
    cid = "c" * 64
    (containers_dir / cid).mkdir()
    (containers_dir / cid / f"{cid}-json.log").write_bytes(json_record(BASE_NS, "x"))
    labels = {f"collector.label.l{i}": "v" for i in range(5)}
    engine.infos[cid] = ContainerInfo(cid, "web", "img", dict(labels), log_driver="json-file", running=True)
    async with asyncio.TaskGroup() as group:
        registry_task = group.create_task(registry.run())
        await registry.running.wait()
        registry.started(ContainerInfo(cid, "web", "img", dict(labels), running=True))  # what the event says
        await wait_until(lambda: registry.containers[cid].source is not None, 10, what="routed")
        assert registry.labels_trimmed == 3  # l2, l3, l4: 4 names with `stream`
        assert sum("labels trimmed to Loki's limits" in record.getMessage() for record in caplog.records) == 1
        registry.stop()
        await registry_task
    hub.close()


async def test_streams_held_back_by_a_full_queue_hold_nothing_read() -> None:
    """A stream source waits for room before it reads: Docker keeps what is not read yet, and the
    collector's memory stays bounded by the queue however many streams are busy."""
    from collector.pipeline.entry import Origin, StreamPosition
    from collector.sources.source import SourceStats
    from collector.sources.stream import StreamSource

    engine = FakeEngine()
    streams = FakeStreams(engine)
    queue = ChunkQueue(64 * 1024)
    await queue.put(Chunk(Origin("filler", {}), [], 64 * 1024))  # full: Loki is down
    sources, tasks = [], []
    for n in range(10):
        cid = f"{n:064d}"
        engine.infos[cid] = ContainerInfo(cid, f"s{n}", "img", log_driver="local", running=True)
        for i in range(500):
            streams.write(cid, BASE_NS + i * 1000, f"{n} line {i}")
        source = StreamSource(cid, False, Origin(cid, {}), queue, streams,  # type: ignore[arg-type]
                              StreamSettings(idle_timeout=30, drain_timeout=2, max_line_bytes=65536),
                              StreamPosition(0, 0), SourceStats(), engine.is_running)
        sources.append(source)
        tasks.append(asyncio.create_task(source.run()))
    try:
        await wait_until(lambda: len(streams.requests) == 10, 5, what="every stream connected")
        await asyncio.sleep(0.3)
        assert [s.stats.bytes for s in sources] == [0] * 10 and all(s.waiting_for_room for s in sources)
        lines: dict[str, list[str]] = {}
        while sum(map(len, lines.values())) < 10 * 500:
            chunk = await asyncio.wait_for(queue.get(), 10)
            lines.setdefault(chunk.origin.container_id, []).extend(entry.line for entry in chunk.entries)
        assert all(found == [f"{int(cid)} line {i}" for i in range(500)] for cid, found in lines.items() if cid != "filler")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
