"""Issue 22 item 10: every way a stream source can end short is counted by reason and logged.

A scripted log-stream client answers each request of one StreamSource in turn: no Docker needed.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from polling import wait_until
from test_registry_fake_engine import BASE_NS, FakeEngine, FakeResponse, FakeStreams, fake_registry

from collector.docker.containers import ContainerInfo
from collector.docker.logstream import LogsUnavailable
from collector.pipeline.entry import Origin, StreamPosition
from collector.pipeline.queue import ChunkQueue
from collector.sources.source import SourceStats
from collector.sources.stream import StreamSettings, StreamSource
from collector.timefmt import rfc3339_nano

CID = "e" * 64


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


def record(ts_ns: int, text: str, stream: int = 1) -> bytes:
    return frame(stream, f"{rfc3339_nano(ts_ns)} {text}\n".encode())


class Scripted:
    """Answers the n-th logs request with the n-th answer: a body (then its end) or an HTTP error."""

    def __init__(self, *answers: bytes | LogsUnavailable) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, bool]] = []

    async def connect(self, cid: str, since: str, follow: bool = True) -> Any:
        self.requests.append((since, follow))
        answer = self.answers.pop(0) if self.answers else LogsUnavailable(404, "No such container")
        if isinstance(answer, LogsUnavailable):
            raise answer
        response = FakeResponse()
        response.content.feed_data(answer)
        response.content.feed_eof()
        return response

    @asynccontextmanager
    async def open(self, cid: str, since: str, follow: bool = True, opened: Any = None) -> AsyncIterator[Any]:
        response = opened or await self.connect(cid, since, follow)
        try:
            yield response.content
        finally:
            response.close()


async def run_source(streams: Scripted) -> tuple[StreamSource, list[str]]:
    """A stopped (draining) container's source run to its end; returns it and the lines it queued."""
    queue = ChunkQueue(1 << 20)

    async def not_running() -> bool:
        return False

    source = StreamSource(CID, False, Origin(CID, {}), queue, streams,  # type: ignore[arg-type]
                          StreamSettings(idle_timeout=5, drain_timeout=2, max_line_bytes=65536, max_backoff=0.05),
                          StreamPosition(0, 0), SourceStats(), not_running)
    source.drain()
    await asyncio.wait_for(source.run(), 10)
    lines = []
    while (chunk := queue.get_nowait()) is not None:
        lines += [e.line for e in chunk.entries]
    return source, lines


async def test_docker_error_text_in_the_stream_is_a_counted_loss_never_a_line(caplog) -> None:
    body = record(BASE_NS, "one") + frame(3, b"Error grabbing logs: unexpected EOF\n") + record(BASE_NS + 1, "two")
    caplog.set_level(logging.WARNING)
    source, lines = await run_source(Scripted(body, b""))
    assert lines == ["one", "two"]
    assert not [r for r in caplog.records if "bad log stream records" in r.getMessage()]
    assert source.stats.lost_events == 1 and source.stats.losses == {"docker_error": 1}
    said = [r for r in caplog.records if getattr(r, "loss", "") == "docker_error"]
    assert said and said[0].container_id == CID[:12] and "unexpected EOF" in said[0].error


async def test_409_dead_or_marked_for_removal_ends_the_source_and_is_counted() -> None:
    conflict = LogsUnavailable(409, "can not get logs from container which is dead or marked for removal")
    streams = Scripted(conflict, conflict, conflict, conflict, conflict, conflict)
    source, lines = await run_source(streams)
    assert lines == [] and len(streams.requests) == 1  # no retry loop against a container Docker will not read
    assert source.stats.losses == {"dead_or_removing": 1}


async def test_stream_of_a_removed_container_cut_before_any_record_is_counted() -> None:
    source, lines = await run_source(Scripted(record(BASE_NS, "never whole")[:20]))  # cut mid-frame, then 404
    assert lines == [] and source.stats.lost_events == 1
    assert source.stats.losses == {"ended_before_any_record": 1}


async def test_empty_stream_of_a_removed_container_is_counted_as_ended_before_any_record() -> None:
    """An orderly end with no record, then the container is gone: it wrote nothing (e.g. `true`), or
    Docker ended the stream without its lines (seen in a burst of `--rm` local-driver containers:
    all 3000 lines of one never came). The two cannot be told apart: counted, never silent."""
    source, lines = await run_source(Scripted(b""))  # the follow stream ends empty, then 404
    assert lines == [] and source.stats.losses == {"ended_before_any_record": 1}


async def test_a_read_through_cut_mid_frame_is_read_again_from_the_position() -> None:
    whole = record(BASE_NS + 1, "two")
    streams = Scripted(record(BASE_NS, "one"), whole[:9], whole, b"")  # follow, cut read-through, again
    source, lines = await run_source(streams)
    assert lines == ["one", "two"] and not source.stats.losses
    assert [follow for _, follow in streams.requests] == [True, False, False]


async def test_a_stream_read_to_its_end_counts_no_loss() -> None:
    source, lines = await run_source(Scripted(record(BASE_NS, "only"), b""))
    assert lines == ["only"] and source.stats.lost_events == 0 and not source.stats.losses


# -- a removed container's stream, driven through the registry (fake engine, fake streams) ----------

def _registry(tmp_path: Any, engine: Any, streams: Any, queue: ChunkQueue) -> Any:
    from collector.positions import PositionStore
    from collector.sources.files import InotifyHub

    return fake_registry(str(tmp_path), queue, streams, PositionStore(str(tmp_path / "positions.json"), 0.05), InotifyHub(),
                         engine.inspect, engine.is_running, stream_backoff=0.05, mode="stream")


async def _rm_container_read_behind(tmp_path: Any, end: Callable[[FakeStreams, str], None],
                                    destroy_event_after_end: bool = False) -> tuple[list[str], Any]:
    """A `--rm` container of the local driver writes 200 lines, dies and is removed while its stream
    is still open (Docker still sending); then its stream ends as `end` makes it end (before the
    destroy event reaches us if `destroy_event_after_end`). Returns the lines delivered and the
    registry's totals."""
    engine = FakeEngine()
    streams = FakeStreams(engine)
    queue = ChunkQueue(1 << 20)
    registry = _registry(tmp_path, engine, streams, queue)
    cid = "f" * 64
    delivered: list[str] = []
    async with asyncio.TaskGroup() as group:
        registry_task = group.create_task(registry.run())
        await registry.running.wait()
        engine.infos[cid] = ContainerInfo(cid, "rm", "img", log_driver="local", running=True)
        registry.started(ContainerInfo(cid, "rm", "img", running=True))
        await wait_until(lambda: streams.requests, 5, what="stream requested")
        for i in range(200):
            streams.write(cid, BASE_NS + i, f"line {i}")
        engine.infos[cid].running = False
        registry.died(cid)
        del engine.infos[cid]  # --rm: removed; the stream has not ended yet (Docker is still sending)
        if destroy_event_after_end:
            end(streams, cid)
            await asyncio.sleep(0.05)
            registry.destroyed(cid)
        else:
            registry.destroyed(cid)
            await asyncio.sleep(0.05)
            end(streams, cid)
        await wait_until(lambda: cid not in registry.containers, 10, what="the removed container's source ended")
        while (chunk := queue.get_nowait()) is not None:
            delivered += [e.line for e in chunk.entries]
        totals = registry.totals()
        registry.stop()
        await registry_task
    return delivered, totals


async def test_rm_container_whose_stream_ends_orderly_after_its_removal_is_counted_as_possibly_cut(tmp_path) -> None:
    """Docker's follow stream of a stopped container usually ends by an orderly EOF once everything
    was sent, however long after the removal; but dockerd 20.10 also ends it orderly and short when
    the container stopped while an older backlog was still being sent, and nothing in the stream
    tells the two apart. Counted under a reason of its own, never a silent loss."""
    lines, totals = await _rm_container_read_behind(tmp_path, FakeStreams.stopped)
    assert lines == [f"line {i}" for i in range(200)]
    assert totals.losses == {"possibly_cut_at_removal": 1}


async def test_rm_container_whose_stream_ends_orderly_before_the_destroy_event_is_counted_as_possibly_cut(tmp_path) -> None:
    """The same blind spot when the stream ends as the container stops, before the destroy event
    of its `--rm` removal arrives (seen in CI: 225 of 3,000 lines missing, nothing counted). The
    container is gone, so no last read can tell a short end from a whole one: counted."""
    lines, totals = await _rm_container_read_behind(tmp_path, FakeStreams.stopped, destroy_event_after_end=True)
    assert lines == [f"line {i}" for i in range(200)]
    assert totals.losses == {"possibly_cut_at_removal": 1}


async def test_rm_container_whose_stream_is_cut_mid_frame_after_its_removal_counts_a_loss(tmp_path, caplog) -> None:
    """A stream that ends inside a frame did not end by Docker's choice; the container is gone, so
    the rest cannot be read again: counted and logged, naming the container."""
    def cut(streams: FakeStreams, cid: str) -> None:
        for response in streams.responses[cid]:
            response.content.feed_data(record(BASE_NS + 500, "half a record")[:12])
            response.content.feed_eof()

    caplog.set_level(logging.WARNING)
    lines, totals = await _rm_container_read_behind(tmp_path, cut)
    assert lines == [f"line {i}" for i in range(200)]
    assert totals.losses == {"removed_while_reading": 1}
    assert [r.container_id for r in caplog.records if getattr(r, "loss", "")] == ["f" * 12]
