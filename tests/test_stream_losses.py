"""Issue 22 item 10: every way a stream source can end short is counted by reason and logged.

A scripted log-stream client answers each request of one StreamSource in turn: no Docker needed.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from collector.docker.logstream import LogsUnavailable
from collector.pipeline.entry import Origin, StreamPosition
from collector.pipeline.queue import ChunkQueue
from collector.sources.source import SourceStats
from collector.sources.stream import StreamSettings, StreamSource
from collector.timefmt import rfc3339_nano
from test_registry_fake_engine import BASE_NS, FakeResponse

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


async def run_source(streams: Scripted, *, removed: bool = True) -> tuple[StreamSource, list[str]]:
    """A stopped (draining) container's source run to its end; returns it and the lines it queued."""
    queue = ChunkQueue(1 << 20)

    async def not_running() -> bool:
        return False

    source = StreamSource(CID, False, Origin(CID, {}), queue, streams,  # type: ignore[arg-type]
                          StreamSettings(idle_timeout=5, drain_timeout=2, max_line_bytes=65536, max_backoff=0.05),
                          StreamPosition(0, 0), SourceStats(), not_running)
    source.drain()
    if removed:
        source.removed(BASE_NS * 2)  # removed long after the stream ended: not a cut
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


async def test_stream_of_a_removed_container_that_ended_before_any_record_is_counted() -> None:
    source, lines = await run_source(Scripted(b""))  # the follow stream ends empty, then 404
    assert lines == [] and source.stats.lost_events == 1
    assert source.stats.losses == {"ended_before_any_record": 1}


async def test_a_stream_read_to_its_end_counts_no_loss() -> None:
    source, lines = await run_source(Scripted(record(BASE_NS, "only"), b""))
    assert lines == ["only"] and source.stats.lost_events == 0 and not source.stats.losses
