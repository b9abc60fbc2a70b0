"""Issue 22 item 9: a stream resumes without losing a record stamped earlier than one before it.

Docker stamps stdout and stderr in separate goroutines (and a clock step back does the same), so
the log can hold a record with an earlier time than the record before it. dockerd's `since`
filter then hides it: per record up to Engine 22 ("filter"), and from Engine 23 on it skips only
the records before the first one at or after `since` ("seek"). No Docker needed here: `dockerd`
below answers a logs request over a list of records the way either filter does.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from polling import wait_until
from test_registry_fake_engine import BASE_NS, FakeEngine, FakeResponse, FakeStreams

from collector.pipeline.entry import Chunk, Origin, StreamPosition
from collector.pipeline.queue import ChunkQueue
from collector.positions import PositionStore
from collector.sources import apistream
from collector.sources.apistream import StreamDecoder, since_param
from collector.sources.source import SourceStats
from collector.sources.stream import StreamSettings, StreamSource
from collector.timefmt import rfc3339_nano

Record = tuple[int, int, str]  # (Docker stream 1/2, ts_ns, text)
MS = 1_000_000


def frame(stream: int, ts_ns: int, text: str) -> bytes:
    payload = f"{rfc3339_nano(ts_ns)} {text}\n".encode()
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


def dockerd(records: list[Record], since_ns: int, how: str) -> bytes:
    """The body dockerd sends for `since`: "filter" drops every record before it, "seek" only the
    records before the first one at or after it."""
    if how == "filter":
        return b"".join(frame(*r) for r in records if r[1] >= since_ns)
    start = next((i for i, r in enumerate(records) if r[1] >= since_ns), len(records))
    return b"".join(frame(*r) for r in records[start:])


def since_ns(position: StreamPosition) -> int:
    seconds, nanos = since_param(position).split(".")
    return int(seconds) * 1_000_000_000 + int(nanos)


# stdout's goroutine stamps "b" 5 ms after stderr's stamps "err", but stdout writes first; then the
# host clock steps back by 3 s before "c".
RECORDS: list[Record] = [
    (1, BASE_NS, "a"),
    (1, BASE_NS + 10 * MS, "b"),
    (2, BASE_NS + 5 * MS, "err"),
    (1, BASE_NS + 20 * MS, "d"),
    (1, BASE_NS + 20 * MS - 3_000 * MS, "c after a clock step back"),
    (1, BASE_NS + 30 * MS, "e"),
]


@pytest.mark.parametrize("how", ["filter", "seek"])
def test_out_of_order_record_survives_a_reconnect_at_every_record(how: str) -> None:
    texts = [r[2] for r in RECORDS]
    for cut in range(len(RECORDS) + 1):
        first = StreamDecoder(tty=False)
        delivered = [e.line for e in first.feed(dockerd(RECORDS[:cut], 0, how))]
        second = StreamDecoder(tty=False, resume_from=first.position)
        delivered += [e.line for e in second.feed(dockerd(RECORDS, since_ns(first.position), how))]
        assert sorted(set(delivered)) == sorted(texts), (cut, delivered)
        if how == "filter":
            assert delivered == texts, cut  # exactly once, in Docker's order


def test_a_clock_step_back_within_the_window_is_tolerated_and_beyond_it_is_reported() -> None:
    back = apistream.RESUME_WINDOW_NS
    records: list[Record] = [(1, BASE_NS, "a"), (1, BASE_NS + back, "b"), (1, BASE_NS, "back by the window")]
    first = StreamDecoder(tty=False)
    first.feed(dockerd(records[:2], 0, "filter"))
    second = StreamDecoder(tty=False, resume_from=first.position)
    assert [e.line for e in second.feed(dockerd(records, since_ns(first.position), "filter"))] == ["back by the window"]
    assert second.stats.beyond_window == 0

    decoder = StreamDecoder(tty=False)
    decoder.feed(dockerd([(1, BASE_NS + 3 * back, "x"), (1, BASE_NS, "far back")], 0, "filter"))
    assert decoder.stats.beyond_window == 1


class TwoStreams(FakeStreams):
    """FakeStreams whose records carry their Docker stream, and can be stored without being sent
    (what dockerd wrote to its log after our connection ended)."""

    def __init__(self, engine: FakeEngine) -> None:
        super().__init__(engine)
        self.ordered: dict[str, list[Record]] = {}

    def store(self, cid: str, stream: int, ts_ns: int, text: str, send: bool = True) -> None:
        self.ordered.setdefault(cid, []).append((stream, ts_ns, text))
        if send:
            for response in self.responses.get(cid, []):
                if not response.closed and not response.content.at_eof():
                    response.content.feed_data(frame(stream, ts_ns, text))

    async def connect(self, cid: str, since: str, follow: bool = True) -> Any:
        self.requests.append((cid, since, follow))
        seconds, nanos = since.split(".")
        response = FakeResponse()
        response.content.feed_data(dockerd(self.ordered.get(cid, []), int(seconds) * 1_000_000_000 + int(nanos), "filter"))
        if not follow or not self.engine.infos[cid].running:
            response.content.feed_eof()
        self.responses.setdefault(cid, []).append(response)
        return response


async def test_out_of_order_record_survives_a_reconnect_and_a_restart(tmp_path) -> None:
    from collector.docker.containers import ContainerInfo

    cid = "d" * 64
    engine = FakeEngine()
    engine.infos[cid] = ContainerInfo(cid, "api", "img", log_driver="local", running=True)
    streams = TwoStreams(engine)
    queue = ChunkQueue(1 << 20)
    path = str(tmp_path / "positions.json")
    positions = PositionStore(path, 60)
    settings = StreamSettings(idle_timeout=30, drain_timeout=2, max_line_bytes=65536, max_backoff=0.2)
    delivered: list[str] = []

    async def sink() -> None:
        while True:
            chunk: Chunk = await queue.get()
            delivered.extend(e.line for e in chunk.entries)
            positions.acknowledge([chunk])

    def source(start: StreamPosition) -> StreamSource:
        return StreamSource(cid, False, Origin(cid, {"container_name": "api"}), queue, streams,  # type: ignore[arg-type]
                            settings, start, SourceStats(), lambda: engine.is_running(cid))

    sink_task = asyncio.create_task(sink())
    first = asyncio.create_task(source(StreamPosition(0, 0)).run())
    try:
        await wait_until(lambda: len(streams.requests) == 1, 5, what="connected")
        streams.store(cid, 1, BASE_NS + 10 * MS, "one")
        streams.store(cid, 1, BASE_NS + 20 * MS, "two")
        await wait_until(lambda: delivered == ["one", "two"], 5, what=lambda: f"first lines {delivered}")
        # The connection ends (a proxy, dockerd restarting); meanwhile stderr's goroutine, which
        # stamped its record before stdout's "two", writes it.
        streams.store(cid, 2, BASE_NS + 15 * MS, "stderr stamped earlier", send=False)
        streams.store(cid, 1, BASE_NS + 30 * MS, "three", send=False)
        streams.stopped(cid)
        await wait_until(lambda: len(delivered) >= 4, 5, what=lambda: f"after the reconnect {delivered}")
        await asyncio.sleep(0.1)
        assert delivered == ["one", "two", "stderr stamped earlier", "three"]

        # The collector stops (its last checkpoint) and starts again; meanwhile the clock stepped back 2 s.
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await positions.save()
        streams.store(cid, 1, BASE_NS + 40 * MS, "four", send=False)
        streams.store(cid, 1, BASE_NS + 40 * MS - 2_000 * MS, "after the clock stepped back", send=False)
        restarted = PositionStore(path, 60)
        restarted.load()
        saved = restarted.get(cid)
        assert isinstance(saved, StreamPosition)
        second = asyncio.create_task(source(saved).run())
        await wait_until(lambda: len(delivered) >= 6, 5, what=lambda: f"after the restart {delivered}")
        await asyncio.sleep(0.1)
        assert delivered[4:] == ["four", "after the clock stepped back"]
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
    finally:
        first.cancel()
        sink_task.cancel()
        await asyncio.gather(first, sink_task, return_exceptions=True)


def test_positions_file_of_the_previous_format_loads_and_resumes_the_same(tmp_path) -> None:
    """Before the window a stream position was (newest timestamp, records delivered at it): the
    same meaning as (since, records to skip) with since at the newest timestamp."""
    path = tmp_path / "positions.json"
    path.write_text('{"version":1,"saved_at_ns":5,"containers":{"c1":{"inode":0,"offset":0,"kind":"stream",'
                    f'"ts_ns":{BASE_NS + 20 * MS},"count":1,"fingerprint":0}},'
                    '"f1":{"inode":7,"offset":9,"kind":"file","ts_ns":0,"count":0,"fingerprint":3}}}')
    store = PositionStore(str(path), 60)
    store.load()
    position = store.get("c1")
    assert isinstance(position, StreamPosition) and since_param(position) == since_param(StreamPosition(BASE_NS + 20 * MS, 0))
    decoder = StreamDecoder(tty=False, resume_from=position)
    entries = decoder.feed(dockerd(RECORDS[:4], since_ns(position), "filter") + frame(1, BASE_NS + 25 * MS, "new"))
    assert [e.line for e in entries] == ["new"] and not decoder.gap
    assert store.get("f1") == (7, 9, 3)
