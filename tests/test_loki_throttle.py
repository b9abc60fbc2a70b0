"""The sink against a fake Loki 3 that answers as Loki's code does (fake clock, no sockets):
service_name added before a stream is named, a per-stream token bucket, only the last stream of
a push reported, sharded streams refused whole, blocked ingestion answered 260."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from loki_receiver import RawEntry, TokenBucket, format_labels, stream_rate_limit_body
from test_loki_sender import FakeClock, config

from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin
from collector.pipeline.queue import ChunkQueue
from collector.sinks.answer import Action, interpret
from collector.sinks.loki import LokiSink
from collector.sinks.transport import Reply

T0 = 1_763_900_000_000_000_000
KB = 1024


@dataclass
class FakeLoki3:
    """Loki 3.6's push path on a fake clock: labels + service_name; per-stream rate limit per
    entry (or the whole stream with shard_streams); the answer is the last stream's result."""

    clock: FakeClock
    rate: float = 256 * KB
    burst: float = 512 * KB
    limited: set[str] = field(default_factory=set)  # container names whose streams are limited (all when empty)
    shard_streams: bool = False
    blocked_until: float = 0.0  # wall time
    stored: list[tuple[str, str, float]] = field(default_factory=list)  # (container_name, line, fake time)
    posts: list[list[str]] = field(default_factory=list)  # container names per post, in order
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    bytes_stored: dict[str, int] = field(default_factory=dict)
    refusals: int = 0

    async def post(self, body: bytes, headers: dict[str, str]) -> Reply:
        await asyncio.sleep(0)
        now = self.clock.now
        doc = json.loads(body)
        self.posts.append([s["stream"].get("container_name", "") for s in doc["streams"]])
        if self.blocked_until and self.clock.wall() < self.blocked_until:
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.blocked_until))
            return Reply(260, f"ingestion blocked for user fake until '{until}' with status code '260'\n")
        error: str | None = None
        for stream in doc["streams"]:
            labels = {k: v for k, v in stream["stream"].items() if v}
            name = labels.get("container_name", "")
            labels.setdefault("service_name", name or "unknown_service")
            shown = format_labels({**labels, **({"__stream_shard__": "0"} if self.shard_streams else {})})
            key = format_labels(labels)
            limited = not self.limited or name in self.limited
            bucket = self.buckets.setdefault(key, TokenBucket(self.rate, self.burst, self.clock.monotonic)) if limited else None
            entries = [(int(v[0]), v[1], sum(len(a) + len(b) for a, b in (v[2] if len(v) > 2 else {}).items())) for v in stream["values"]]
            failed: list[RawEntry] = []
            if bucket is not None and self.shard_streams:
                total = sum(len(line) + meta for _, line, meta in entries)
                if not bucket.allow(total):
                    failed = [RawEntry(ts, line, len(line)) for ts, line, _ in entries]
            for ts, line, meta in entries:
                if failed and self.shard_streams:
                    break
                if bucket is not None and not self.shard_streams and not bucket.allow(len(line) + meta):
                    failed.append(RawEntry(ts, line, len(line)))
                    continue
                self.stored.append((name, line, now))
                self.bytes_stored[name] = self.bytes_stored.get(name, 0) + len(line) + meta
            error = stream_rate_limit_body("fake", shown, failed, len(entries), int(self.rate)) if failed else None
        if error:
            self.refusals += 1
            return Reply(429, error + "\n")
        return Reply(204, "")

    async def close(self) -> None:
        pass

    def lines(self, name: str) -> list[str]:
        return [line for who, line, _ in self.stored if who == name]


@dataclass
class Feeder:
    """A source as the real ones behave: waits for room (and while paused) before it reads."""

    queue: ChunkQueue
    name: str
    origin: Origin = field(init=False)
    read: int = 0
    lines_per_chunk: int = 100
    line_bytes: int = 120
    chunks: dict[int, list[str]] = field(default_factory=dict)  # id(chunk) -> its lines, for the ack check
    made: list[Chunk] = field(default_factory=list)  # kept alive: an id is not reused while it is a key above

    def __post_init__(self) -> None:
        self.origin = Origin(self.name, {"container_name": self.name})

    def next_chunk(self, stream: str = "stdout") -> Chunk:
        lines = [f"{self.name} {self.read + i:08d} ".ljust(self.line_bytes, "x") for i in range(self.lines_per_chunk)]
        entries = [Entry(T0 + (self.read + i) * 1000, line, stream) for i, line in enumerate(lines)]
        self.read += len(lines)
        chunk = Chunk(self.origin, entries, sum(len(line) + 1 for line in lines), FilePosition(1, self.read))
        self.chunks[id(chunk)] = lines
        self.made.append(chunk)
        return chunk

    async def run(self, total_lines: int, pause_between: float = 0.0) -> None:
        while self.read < total_lines:
            await self.queue.room(self.lines_per_chunk * self.line_bytes, self.origin.container_id)
            self.queue.put_nowait(self.next_chunk())
            await asyncio.sleep(pause_between)


class Acks:
    """Every acknowledgement checked against what Loki stored: a position never passes an
    entry Loki does not hold, and a container's positions only move forward."""

    def __init__(self, loki: FakeLoki3, feeders: list[Feeder]) -> None:
        self.loki = loki
        self.feeders = {feeder.name: feeder for feeder in feeders}
        self.positions: dict[str, list[int]] = {}

    def __call__(self, chunks: list[Chunk]) -> None:
        stored = {line for _, line, _ in self.loki.stored}
        for chunk in chunks:
            name = chunk.origin.container_id
            lines = self.feeders[name].chunks[id(chunk)]
            assert all(line in stored for line in lines), f"{name} acknowledged ahead of storage"
            assert isinstance(chunk.position, FilePosition)
            seen = self.positions.setdefault(name, [])
            assert not seen or chunk.position.offset > seen[-1], f"{name} acknowledged out of read order"
            seen.append(chunk.position.offset)


async def _until(predicate, clock: FakeClock, fake_seconds: float) -> None:  # type: ignore[no-untyped-def]
    deadline = clock.now + fake_seconds
    for _ in range(200_000):
        if predicate() or clock.now > deadline:
            return
        await asyncio.sleep(0.0005)


def _sink(loki: FakeLoki3, clock: FakeClock, **overrides: object) -> LokiSink:
    values: dict[str, object] = {"batch_max_bytes": 256 * KB, "limit_retry_max": 300.0}
    values.update(overrides)
    return LokiSink(config(**values), transport=loki, clock=clock)


async def test_hot_stream_is_paced_at_lokis_rate_while_twenty_other_containers_flow() -> None:
    clock = FakeClock()
    loki = FakeLoki3(clock, limited={"hot"})
    queue = ChunkQueue(1 << 20)
    hot = Feeder(queue, "hot")
    quiet = [Feeder(queue, f"quiet{i}", lines_per_chunk=2) for i in range(20)]
    acks = Acks(loki, [hot, *quiet])
    sink = _sink(loki, clock)
    run = asyncio.create_task(sink.run(queue, acks))
    feeding = asyncio.create_task(hot.run(30_000))
    await _until(lambda: sink.throttle.sets, clock, 60)
    throttled_at, posts_before = clock.now, len(loki.posts)
    # The quiet containers write while the hot one is throttled: every line stored at once.
    for round_ in range(5):
        for feeder in quiet:
            await queue.room(1, feeder.name)
            queue.put_nowait(feeder.next_chunk())
        await _until(lambda: all(len(loki.lines(f.name)) == f.read for f in quiet), clock, 60)
        assert all(len(loki.lines(f.name)) == f.read for f in quiet), round_
    assert clock.now - throttled_at < 5.0  # not behind the hot stream's backlog
    await feeding
    queue.close()
    await asyncio.wait_for(run, 60)
    assert len(set(loki.lines("hot"))) == 30_000  # every line, none lost
    # Paced: after the throttle, Loki refused (almost) nothing more, and the rate stayed under its limit.
    after = [(line, at) for who, line, at in loki.stored if who == "hot" and at > throttled_at]
    rate = sum(len(line) for line, _ in after) / (max(at for _, at in after) - throttled_at)
    assert rate <= 256 * KB and loki.refusals <= 2  # under the limit: Loki had no cause to refuse again
    assert sink.stats.throttled["per_stream_rate_limit"] < 3_000  # set aside at the first 429, not again and again
    # Once throttled, the hot stream travels alone (Loki's answer is then always about it).
    assert all(names == ["hot"] for names in loki.posts[posts_before:] if "hot" in names)


async def test_two_containers_sharing_one_label_set_are_acknowledged_each_for_its_own_entries() -> None:
    clock = FakeClock()
    loki = FakeLoki3(clock, rate=16 * KB, burst=32 * KB)
    queue = ChunkQueue(1 << 20)
    first, second = Feeder(queue, "a"), Feeder(queue, "b")
    second.origin = Origin("b", {"container_name": "web"})  # a compose service recreated: one label set
    first.origin = Origin("a", {"container_name": "web"})
    acks = Acks(loki, [first, second])
    sink = _sink(loki, clock)
    run = asyncio.create_task(sink.run(queue, acks))
    await asyncio.gather(first.run(2_000), second.run(2_000))
    queue.close()
    await asyncio.wait_for(run, 60)
    lines = set(loki.lines("web"))
    assert {line for line in lines if line.startswith("a ")} == {line for ls in first.chunks.values() for line in ls}
    assert {line for line in lines if line.startswith("b ")} == {line for ls in second.chunks.values() for line in ls}
    assert acks.positions["a"][-1] == 2_000 and acks.positions["b"][-1] == 2_000
    assert not sink.stats.dropped


async def test_a_throttled_container_is_paused_and_the_sink_holds_little_for_ten_minutes() -> None:
    clock = FakeClock()
    loki = FakeLoki3(clock, rate=4 * KB, burst=8 * KB, limited={"hot"})
    queue = ChunkQueue(1 << 20)
    hot = Feeder(queue, "hot")
    acks = Acks(loki, [hot])
    sink = _sink(loki, clock, limit_retry_max=1e9)
    run = asyncio.create_task(sink.run(queue, acks))
    feeding = asyncio.create_task(hot.run(10**9))  # writes for ever, as fast as it may
    held: list[int] = []
    while clock.now < 600:
        await asyncio.sleep(0.001)
        held.append(sum(item.queued_bytes for item in sink.throttle.sets.values()))
    # What the source read beyond what Loki stored is what the queue and the sink hold: bounded
    # by the queue, a batch and a paced push, not by ten minutes of writing.
    read_bytes = hot.read * hot.line_bytes
    stored_bytes = loki.bytes_stored.get("hot", 0)
    assert read_bytes - stored_bytes <= queue.max_bytes + 2 * 256 * KB + 8 * KB
    assert max(held) <= queue.max_bytes + 256 * KB
    assert stored_bytes >= 0.8 * 4 * KB * 600  # and it keeps flowing at about the rate Loki allows
    feeding.cancel()
    queue.close()
    run.cancel()
    await asyncio.wait([run, feeding])


async def test_a_sharded_stream_refused_whole_is_resent_whole_and_nothing_is_lost() -> None:
    clock = FakeClock()
    loki = FakeLoki3(clock, rate=8 * KB, burst=16 * KB, limited={"hot"}, shard_streams=True)
    queue = ChunkQueue(1 << 20)
    hot, calm = Feeder(queue, "hot"), Feeder(queue, "calm", lines_per_chunk=3)
    acks = Acks(loki, [hot, calm])
    sink = _sink(loki, clock)
    run = asyncio.create_task(sink.run(queue, acks))
    await asyncio.gather(hot.run(1_000), calm.run(30))
    queue.close()
    await asyncio.wait_for(run, 60)
    assert len(set(loki.lines("hot"))) == 1_000 and len(set(loki.lines("calm"))) == 30
    assert not sink.stats.dropped


async def test_blocked_ingestion_260_holds_everything_until_the_time_loki_names() -> None:
    clock = FakeClock()
    loki = FakeLoki3(clock, limited={"nobody"})
    loki.blocked_until = clock.wall() + 90
    queue = ChunkQueue(1 << 20)
    feeder = Feeder(queue, "a", lines_per_chunk=5)
    acked: list[Chunk] = []
    sink = _sink(loki, clock, max_backoff=30.0)
    run = asyncio.create_task(sink.run(queue, acked.extend))
    await feeder.run(5)
    await _until(lambda: len(loki.posts) >= 2, clock, 60)
    assert not acked and not loki.stored
    reason = sink.not_ready_reason(30.0)
    assert reason and "blocks ingestion" in reason and "block_ingestion_until" in reason
    queue.close()
    await asyncio.wait_for(run, 30)
    assert len(loki.lines("a")) == 5 and len(acked) == 1
    assert 90 <= clock.now <= 90 + 30  # retried at the time Loki named, not later
    assert sink.not_ready_reason(30.0) is None


async def test_acknowledgements_keep_read_order_within_a_container() -> None:
    clock = FakeClock()
    loki = FakeLoki3(clock, rate=2 * KB, burst=2 * KB, limited={"a"})
    queue = ChunkQueue(1 << 20)
    feeder = Feeder(queue, "a", lines_per_chunk=20)
    acks = Acks(loki, [feeder])
    sink = _sink(loki, clock)
    run = asyncio.create_task(sink.run(queue, acks))
    await feeder.run(40)  # the second chunk is small enough to pass while the first is throttled
    queue.put_nowait(feeder.next_chunk("stderr"))
    queue.close()
    await asyncio.wait_for(run, 60)
    assert acks.positions["a"] == sorted(acks.positions["a"]) and acks.positions["a"][-1] == 60


async def test_a_stream_loki_takes_slowly_is_never_given_up() -> None:
    clock = FakeClock()
    loki = FakeLoki3(clock, rate=1 * KB, burst=2 * KB)
    queue = ChunkQueue(1 << 20)
    feeder = Feeder(queue, "slow")
    sink = _sink(loki, clock, limit_retry_max=30.0)
    run = asyncio.create_task(sink.run(queue, Acks(loki, [feeder])))
    await feeder.run(1_000)  # 120 KB at 1 KB/s: two minutes, four times limit_retry_max
    queue.close()
    await asyncio.wait_for(run, 60)
    assert len(set(loki.lines("slow"))) == 1_000 and not sink.stats.dropped
    assert clock.now > 100


def test_loki3_answers_read_as_they_are() -> None:
    named = format_labels({"container_name": "web", "host": "vm", "service_name": "web", "stream": "stdout"})
    verdict = interpret(429, stream_rate_limit_body("t", named, [RawEntry(T0, "x", 1)], 3, 256 * KB))
    assert verdict.action is Action.STREAM_THROTTLED and verdict.limit_bytes_per_s == 256 * KB
    assert verdict.stream == {"container_name": "web", "host": "vm", "service_name": "web", "stream": "stdout"}
    blocked = interpret(260, "ingestion blocked for user t until '2026-12-07T10:00:00Z' with status code '260'\n")
    assert blocked.action is Action.HOLD and blocked.reason == "blocked" and blocked.until_wall == 1_796_637_600.0
    assert interpret(200, "").action is Action.STORED and interpret(204, "").reason == ""
    other = interpret(202, "")
    assert other.action is Action.STORED and other.reason == "http_202"


async def test_a_backlog_read_back_for_a_throttled_container_is_held_within_a_bound() -> None:
    """What the spool reads back was written before any pause: 8 MiB of a throttled container put
    into the queue regardless. The sink takes no more from the queue than its bound allows."""
    clock = FakeClock()
    loki = FakeLoki3(clock, rate=64 * KB, burst=64 * KB, limited={"hot"})
    queue = ChunkQueue(1 << 20)
    hot = Feeder(queue, "hot")
    acks = Acks(loki, [hot])
    sink = _sink(loki, clock)
    run = asyncio.create_task(sink.run(queue, acks))
    bound = queue.max_bytes + 2 * 256 * KB
    held: list[int] = []

    async def read_back() -> None:  # as ChunkQueue.refill does: whenever the queue has room
        while hot.read < 70_000:
            while queue.nbytes >= queue.max_bytes:
                await asyncio.sleep(0.0005)
            queue.put_nowait(hot.next_chunk())
            held.append(sink.throttle.queued_bytes)

    await read_back()
    queue.close()
    await asyncio.wait_for(run, 120)
    assert len(set(loki.lines("hot"))) == 70_000 and not sink.stats.dropped
    assert max(held) <= bound + 256 * KB  # a batch may land on top of the bound before the sink stops taking
