"""The Loki sender against a scripted transport and a fake clock (as aiokafka's and httpcore's
tests do): retries, backoff, 401/403/404, 413, each 429 cause, Retry-After, shutdown. No sockets,
no sleeps. Loki's answer bodies come from the test receiver's builders, which copy Loki 3.6."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from loki_receiver import RawEntry, format_labels, stream_limit_body, stream_rate_limit_body, tenant_rate_limit_body

from collector.config import LokiConfig
from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin
from collector.pipeline.queue import ChunkQueue
from collector.sinks.answer import Action, interpret, parse_labels, sentence
from collector.sinks.loki import LokiSink
from collector.sinks.transport import AiohttpTransport, Reply, Unreachable

T0 = 1_763_900_000_000_000_000
REFUSED = Unreachable("connection refused: 127.0.0.1:3999")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    async def wait_event(self, event: asyncio.Event, timeout: float) -> None:
        await asyncio.sleep(0.001)  # not a busy loop: the encoder thread and the other tasks run
        if not event.is_set():
            self.now += timeout


@dataclass
class Posted:
    streams: dict[str, list[str]]  # label string -> lines
    size: int
    at: float


Answer = Reply | Exception | Callable[[Posted], Reply | Exception]


@dataclass
class FakeTransport:
    """Answers each post with the next scripted answer (then 204); records every post."""

    clock: FakeClock
    script: list[Answer] = field(default_factory=list)
    then: Answer = field(default_factory=lambda: Reply(204, ""))
    posts: list[Posted] = field(default_factory=list)
    stored: list[tuple[str, str]] = field(default_factory=list)  # (labels, line) Loki kept
    closed: bool = False
    on_post: Callable[[], None] | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> Reply:
        doc = json.loads(body)
        streams = {format_labels(s["stream"]): [v[1] for v in s["values"]] for s in doc["streams"]}
        posted = Posted(streams, len(body), self.clock.now)
        self.posts.append(posted)
        if self.on_post:
            self.on_post()
        answer = self.script.pop(0) if self.script else self.then
        if callable(answer) and not isinstance(answer, (Reply, Exception)):
            answer = answer(posted)
        if isinstance(answer, Exception):
            raise answer
        self.store(posted, answer)
        await asyncio.sleep(0)
        return answer

    def store(self, posted: Posted, reply: Reply) -> None:
        if 200 <= reply.status < 300:
            self.stored += [(labels, line) for labels, lines in posted.streams.items() for line in lines]

    async def close(self) -> None:
        self.closed = True


def config(**overrides: object) -> LokiConfig:
    values: dict[str, object] = {"url": "http://loki:3100/loki/api/v1/push", "encoding": "json", "structured_metadata": [],
                                 "min_backoff": 0.5, "max_backoff": 30.0, "batch_max_wait": 0.01}
    values.update(overrides)
    return LokiConfig(**values)  # type: ignore[arg-type]


def labels_of(name: str, stream: str = "stdout") -> str:
    return format_labels({"container_name": name, "stream": stream})


def chunk(name: str, lines: list[str], offset: int, stream: str = "stdout", origin: Origin | None = None) -> Chunk:
    origin = origin or Origin(name, {"container_name": name})
    entries = [Entry(T0 + offset * 1000 + i, line, stream) for i, line in enumerate(lines)]
    return Chunk(origin, entries, sum(len(line) + 1 for line in lines), FilePosition(1, offset + len(lines)))


class Harness:
    def __init__(self, transport: FakeTransport, clock: FakeClock, **overrides: object) -> None:
        self.sink = LokiSink(config(**overrides), transport=transport, clock=clock)
        self.queue = ChunkQueue(64 * 1024 * 1024)
        self.acked: list[tuple[str, object]] = []

    def acknowledge(self, chunks: list[Chunk]) -> None:
        self.acked += [(c.origin.container_id, c.position) for c in chunks]

    async def deliver(self, *chunks: Chunk) -> None:
        for item in chunks:
            await self.queue.put(item)
        self.queue.close()
        await self.sink.run(self.queue, self.acknowledge)


def stored_lines(transport: FakeTransport, name: str, stream: str = "stdout") -> list[str]:
    wanted = labels_of(name, stream)
    return [line for labels, line in transport.stored if labels == wanted]


async def test_ten_thousand_failures_then_success_backoff_stays_capped() -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, script=[REFUSED] * 10_000)
    harness = Harness(transport, clock)
    await harness.deliver(chunk("a", ["one", "two"], 0))
    assert len(transport.posts) == 10_001
    assert stored_lines(transport, "a") == ["one", "two"]
    assert harness.acked == [("a", FilePosition(1, 2))]
    assert max(clock.sleeps) <= 30.0 and min(clock.sleeps[-100:]) >= 15.0  # capped, jittered in [max/2, max]
    assert harness.sink.stats.retries == 10_000 and harness.sink.stats.requests["error"] == 10_000
    assert not harness.sink.stats.dropped


async def test_401_holds_everything_retries_at_max_backoff_and_says_why() -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, script=[Reply(401, "Unauthorized\n")] * 20)
    harness = Harness(transport, clock)
    seen: list[tuple[int, str | None]] = []
    transport.on_post = lambda: seen.append((len(harness.acked), harness.sink.not_ready_reason(30.0)))
    await harness.deliver(chunk("a", ["x"] * 3, 0))
    assert stored_lines(transport, "a") == ["x"] * 3
    assert [acked for acked, _ in seen] == [0] * 21  # no position advanced while refused
    reasons = {reason for _, reason in seen[1:]}
    assert len(reasons) == 1
    reason = reasons.pop()
    assert reason is not None and "HTTP 401" in reason and reason.endswith(".") and "loki.username" in reason
    assert clock.sleeps == [30.0] * 20
    assert not harness.sink.stats.dropped and harness.sink.not_ready_reason(30.0) is None


@pytest.mark.parametrize("status", [403, 404])
async def test_403_and_404_hold_too(status: int) -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, script=[Reply(status, "nope")] * 3)
    harness = Harness(transport, clock)
    await harness.deliver(chunk("a", ["x"], 0))
    assert stored_lines(transport, "a") == ["x"] and clock.sleeps == [30.0] * 3 and not harness.sink.stats.dropped


async def test_hold_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, script=[Reply(401, "Unauthorized")] * 20)  # 20 x 30 s = 10 minutes
    harness = Harness(transport, clock)
    with caplog.at_level(logging.ERROR, logger="collector.sinks.loki"):
        await harness.deliver(chunk("a", ["x"], 0))
    refusals = [r for r in caplog.records if "refuses" in r.getMessage()]
    assert len(refusals) == 10


async def test_413_splits_until_the_body_fits_and_drops_only_a_lone_oversized_entry() -> None:
    clock = FakeClock()
    limit = 3000

    def gateway(posted: Posted) -> Reply:
        return Reply(413, "<html>413 Request Entity Too Large</html>") if posted.size > limit else Reply(204, "")

    transport = FakeTransport(clock, then=gateway)
    harness = Harness(transport, clock)
    lines = [f"{i:04d} " + "y" * 95 for i in range(100)]
    huge = "z" * 5000
    await harness.deliver(chunk("a", lines[:50], 0), chunk("b", [huge], 0), chunk("a", lines[50:], 50))
    assert stored_lines(transport, "a") == lines  # every line once, in order
    assert stored_lines(transport, "b") == []
    assert harness.sink.stats.dropped == {"too_large": 1}
    assert any(p.size > limit for p in transport.posts) and len(transport.posts) > 4
    assert {cid for cid, _ in harness.acked} == {"a", "b"}


async def test_tenant_rate_limit_resends_the_whole_push() -> None:
    clock = FakeClock()
    body = tenant_rate_limit_body("fake", 100, 4, 400) + "\n"
    transport = FakeTransport(clock, script=[Reply(429, body)] * 3)
    harness = Harness(transport, clock)
    await harness.deliver(chunk("a", ["1", "2"], 0), chunk("b", ["3", "4"], 0))
    assert [sorted(p.streams) for p in transport.posts] == [sorted([labels_of("a"), labels_of("b")])] * 4
    assert stored_lines(transport, "a") == ["1", "2"] and stored_lines(transport, "b") == ["3", "4"]
    assert len(clock.sleeps) == 3 and not harness.sink.stats.dropped


async def test_retry_after_is_honoured_up_to_max_backoff() -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, script=[Reply(503, "busy", "7"), Reply(429, "slow down", "3600"),
                                             Reply(503, "busy", "Fri, 15 Jan 2027 08:00:05 GMT")])
    harness = Harness(transport, clock)
    await harness.deliver(chunk("a", ["x"], 0))
    assert clock.sleeps[:2] == [7.0, 30.0]
    assert 0 <= clock.sleeps[2] <= 30.0
    assert stored_lines(transport, "a") == ["x"]


def _rate_limited(name: str, lines_of_b: int, shard: bool = False) -> Callable[[Posted], Reply]:
    """Loki 3's ingester: stores every stream but `name`'s, answers 429 naming it with the labels
    Loki adds (service_name; with `shard`, the shard label too)."""

    def answer(posted: Posted) -> Reply:
        throttled = labels_of(name)
        for labels in list(posted.streams):
            if labels == throttled:
                lines = posted.streams[labels]
                added = {"service_name": name, **({"__stream_shard__": "0"} if shard else {})}
                shown = format_labels({**(parse_labels(labels) or {}), **added})
                failed = [RawEntry(T0 + i, line, len(line)) for i, line in enumerate(lines)]
                return Reply(429, stream_rate_limit_body("fake", shown, failed, len(lines), 3 << 20) + "\n")
        return Reply(204, "")

    return answer


class StoreOthers(FakeTransport):
    """Stores the streams a 429 does not name, like Loki's ingester does."""

    def store(self, posted: Posted, reply: Reply) -> None:
        super().store(posted, reply)
        if reply.status != 429:
            return
        if "for stream: " in reply.body:
            named = parse_labels(reply.body.split("for stream: ")[-1].strip())
        elif "create stream " in reply.body:
            named = parse_labels(reply.body.split("create stream ")[1].split(", reduce")[0])
        else:
            return
        named = {k: v for k, v in (named or {}).items() if k not in ("__stream_shard__", "service_name")}
        self.stored += [(labels, line) for labels, lines in posted.streams.items() if parse_labels(labels) != named
                        for line in lines]


async def test_per_stream_429_named_with_service_name_paces_that_stream_and_resends_the_others_alone() -> None:
    clock = FakeClock()
    transport = StoreOthers(clock)
    transport.script = [_rate_limited("b", 2), _rate_limited("b", 2)]
    harness = Harness(transport, clock)
    await harness.deliver(chunk("a", ["a1", "a2"], 0), chunk("b", ["b1", "b2"], 0), chunk("c", ["c1"], 0))
    # Loki names b with service_name added: matched by subset. a and c may have been refused
    # unseen (Loki reports only the last stream), so each is resent alone: a duplicate, never a loss.
    assert stored_lines(transport, "a") == ["a1", "a2"] * 2 and stored_lines(transport, "c") == ["c1"] * 2
    assert stored_lines(transport, "b") == ["b1", "b2"]  # once
    assert all(len(p.streams) == 1 for p in transport.posts[1:])
    assert [list(p.streams) for p in transport.posts if labels_of("b") in p.streams][1:] == [[labels_of("b")]]
    # a and c are acknowledged once stored; b only once its stream is stored.
    assert [cid for cid, _ in harness.acked] == ["a", "c", "b"]
    assert harness.sink.stats.throttled["per_stream_rate_limit"] == 2 and not harness.sink.stats.dropped


async def test_max_streams_429_resends_only_the_stream_it_could_not_create() -> None:
    clock = FakeClock()
    transport = StoreOthers(clock)

    def no_room_for_b(posted: Posted) -> Reply:
        return Reply(429, stream_limit_body(labels_of("b"), "fake") + "\n") if labels_of("b") in posted.streams else Reply(204, "")

    transport.script = [no_room_for_b]
    harness = Harness(transport, clock)
    await harness.deliver(chunk("a", ["a1"], 0), chunk("b", ["b1"], 0))
    assert set(stored_lines(transport, "a")) == {"a1"} and stored_lines(transport, "b") == ["b1"]
    assert [sorted(p.streams) for p in transport.posts[1:]] == [[labels_of("a")], [labels_of("b")]]
    assert harness.sink.stats.throttled == {"stream_limit": 1}


async def test_only_the_entries_loki_lists_as_ignored_are_resent() -> None:
    clock = FakeClock()
    transport = StoreOthers(clock)

    def partly(posted: Posted) -> Reply:
        lines = posted.streams[labels_of("b")]
        failed = [RawEntry(T0 + 2, lines[2], len(lines[2]))]  # only b3 ignored: the others stored
        transport.stored += [(labels_of("b"), line) for i, line in enumerate(lines) if i != 2]
        return Reply(429, stream_rate_limit_body("fake", labels_of("b"), failed, len(lines), 1024))

    transport.script = [partly]
    harness = Harness(transport, clock)
    await harness.deliver(chunk("b", ["b1", "b2", "b3", "b4"], 0))
    assert transport.posts[1].streams == {labels_of("b"): ["b3"]}
    assert sorted(stored_lines(transport, "b")) == ["b1", "b2", "b3", "b4"]


async def test_a_stream_throttled_for_ever_is_given_up_after_limit_retry_max_and_counted() -> None:
    clock = FakeClock()
    transport = StoreOthers(clock, then=_rate_limited("b", 1))
    harness = Harness(transport, clock, limit_retry_max=300.0)
    await harness.deliver(chunk("a", ["a1"], 0), chunk("b", ["b1", "b2"], 0))
    assert set(stored_lines(transport, "a")) == {"a1"} and stored_lines(transport, "b") == []
    assert harness.sink.stats.dropped == {"per_stream_rate_limit": 2}
    assert 300.0 <= clock.now <= 300.0 + 2 * 30.0
    assert [cid for cid, _ in harness.acked] == ["a", "b"]  # given up: b no longer holds its position


async def test_a_throttled_stream_does_not_stall_other_containers() -> None:
    clock = FakeClock()
    transport = StoreOthers(clock, then=_rate_limited("b", 1))
    harness = Harness(transport, clock, limit_retry_max=1e9)  # the fake clock runs fast here
    run = asyncio.create_task(harness.sink.run(harness.queue, harness.acknowledge))
    b = Origin("b", {"container_name": "b"})
    await harness.queue.put(chunk("b", ["b1"], 0, origin=b))
    await harness.queue.put(chunk("a", ["a1"], 0))
    for i in range(2, 6):
        await asyncio.sleep(0.02)
        await harness.queue.put(chunk("a", [f"a{i}"], i))
        harness.queue.put_nowait(chunk("b", [f"b{i}"], i, origin=b))  # b's new lines join b's own pushes

    def b_posted() -> set[str]:
        return {line for p in transport.posts[1:] for line in p.streams.get(labels_of("b"), [])}

    for _ in range(5000):  # real time, a little: the fake clock runs the backoffs
        if len(set(stored_lines(transport, "a"))) == 5 and len(b_posted()) == 5 and ("a", FilePosition(1, 6)) in harness.acked:
            break
        await asyncio.sleep(0.001)
    assert sorted(set(stored_lines(transport, "a"))) == [f"a{i}" for i in range(1, 6)]
    assert all(list(p.streams) == [labels_of("b")] for p in transport.posts[1:] if labels_of("b") in p.streams)
    assert b_posted() == {f"b{i}" for i in range(1, 6)}  # b's lines go out alone, again and again
    assert "b" not in [cid for cid, _ in harness.acked] and ("a", FilePosition(1, 6)) in harness.acked
    run.cancel()
    await asyncio.wait([run])


async def test_shutdown_during_backoff_ends_at_once_without_acknowledging() -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, then=REFUSED)
    harness = Harness(transport, clock)

    async def slow_sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        await asyncio.sleep(3600)  # a real backoff: the cancel must interrupt it

    clock.sleep = slow_sleep  # type: ignore[method-assign]
    run = asyncio.create_task(harness.deliver(chunk("a", ["x"], 0)))
    while not clock.sleeps:
        await asyncio.sleep(0.001)
    run.cancel()
    done, _ = await asyncio.wait([run], timeout=5)
    assert done and run.cancelled()
    assert harness.acked == [] and transport.closed and not harness.sink.stats.dropped


def test_interpret_each_answer() -> None:
    b = labels_of("b")
    assert interpret(204, "").action is Action.STORED
    assert interpret(0, "connection refused").action is Action.RETRY
    assert interpret(503, "").action is Action.RETRY and interpret(408, "").action is Action.RETRY
    assert interpret(401, "").action is Action.HOLD and interpret(403, "").action is Action.HOLD
    assert interpret(404, "404 page not found").action is Action.HOLD
    assert interpret(413, "").action is Action.SPLIT
    assert interpret(429, tenant_rate_limit_body("t", 1, 2, 3)).action is Action.RETRY
    assert interpret(429, "Too Many Requests").action is Action.RETRY  # a gateway's, nothing stored
    throttled = interpret(429, stream_rate_limit_body("t", format_labels({"__stream_shard__": "3", "container_name": "b", "stream": "stdout"}),
                                                      [RawEntry(T0, "x", 1)], 4, 1024))
    assert throttled.action is Action.STREAM_THROTTLED and throttled.stream == {**parse_labels(b), "__stream_shard__": "3"}
    assert (throttled.ignored, throttled.out_of, throttled.ignored_ts_ns) == (1, 4, (T0,))
    assert throttled.limit_bytes_per_s == 1024
    limit = interpret(429, stream_limit_body(b, "t"))
    assert limit.action is Action.STREAM_THROTTLED and limit.reason == "stream_limit" and limit.stream == parse_labels(b)
    rejected = interpret(400, "entry for stream '{a=\"b\"}' has timestamp too old: 2020-01-01T00:00:00Z, oldest acceptable timestamp is: x")
    assert rejected.action is Action.REJECTED and rejected.rejected == {"greater_than_max_sample_age": 1}
    assert interpret(422, "error at least one valid stream is required for ingestion").action is Action.DROP


def test_label_strings_with_go_escapes_parse() -> None:
    assert parse_labels('{a="x \\"q\\" \\\\ \\n", b="\\u00e9"}') == {"a": 'x "q" \\ \n', "b": "é"}
    assert parse_labels("not labels") is None


def test_sentences_are_never_cut_mid_word() -> None:
    text = "HTTP 503: " + " ".join(["upstream"] * 60)
    short = sentence(text, 200)
    assert len(short) <= 200 and short.endswith("upstream…")
    assert sentence("a  b\n c") == "a b c"


async def test_a_refused_connection_reads_as_short_text() -> None:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = AiohttpTransport(config(url=f"http://127.0.0.1:{port}/loki/api/v1/push"))
    try:
        with pytest.raises(Unreachable) as caught:
            await transport.post(b"{}", {"Content-Type": "application/json"})
    finally:
        await transport.close()
    assert str(caught.value) == f"connection refused: 127.0.0.1:{port}"


async def test_not_ready_after_the_threshold_with_a_whole_sentence() -> None:
    clock = FakeClock()
    body = "upstream connect error or disconnect/reset before headers. " * 10
    transport = FakeTransport(clock, script=[Reply(503, body)] * 8)
    harness = Harness(transport, clock)
    reasons: list[str | None] = []
    transport.on_post = lambda: reasons.append(harness.sink.not_ready_reason(30.0))
    await harness.deliver(chunk("a", ["x"], 0))
    assert reasons[0] is None  # failing, but not for long yet
    late = [r for r in reasons if r]
    words = set(body.split())
    assert late and all(r.startswith("Loki has accepted no push for ") and r.endswith("…") for r in late)
    assert all(r.removesuffix("…").split()[-1] in words for r in late)  # cut between words, never inside one
    assert all("HTTP 503: upstream connect error" in r for r in late)
    assert harness.sink.not_ready_reason(30.0) is None  # delivered


async def test_connection_errors_are_logged_as_short_text(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, script=[REFUSED])
    harness = Harness(transport, clock)
    with caplog.at_level(logging.WARNING, logger="collector.sinks.loki"):
        await harness.deliver(chunk("a", ["x"], 0))
    retries = [r for r in caplog.records if r.getMessage() == "push failed; retrying"]
    assert [r.error for r in retries] == ["connection refused: 127.0.0.1:3999"]  # type: ignore[attr-defined]


async def test_an_outage_does_not_count_towards_limit_retry_max() -> None:
    clock = FakeClock()
    transport = StoreOthers(clock)
    # Throttled once, then Loki is down for 20 minutes (40 x 30 s), then it takes the stream.
    transport.script = [_rate_limited("b", 1), *[REFUSED] * 40]
    harness = Harness(transport, clock, limit_retry_max=300.0)
    await harness.deliver(chunk("a", ["a1"], 0), chunk("b", ["b1"], 0))
    assert stored_lines(transport, "b") == ["b1"] and not harness.sink.stats.dropped
    assert clock.now > 600


def test_two_sources_of_one_stream_stay_together_in_read_order_whatever_their_sizes() -> None:
    """A restarted source makes a new Origin with the same labels: both parts are one Loki stream,
    so they go out adjacent and in read order (sorting by size alone would put the newer, smaller
    part first), while a larger other stream still goes last."""
    from collector.sinks.batch import Batch
    from collector.sinks.encoding import PushEncoder

    batch = Batch()
    old, new = Origin("a", {"container_name": "a"}), Origin("a", {"container_name": "a"})
    batch.add(chunk("a", ["old-1-long-line", "old-2-long-line"], 0, origin=old))
    batch.add(chunk("b", ["b" * 100], 0))
    batch.add(chunk("a", ["new"], 2, origin=new))
    body, _ = PushEncoder(config()).encode(batch.push)
    streams = json.loads(body)["streams"]
    assert [(s["stream"]["container_name"], [v[1] for v in s["values"]]) for s in streams] == [
        ("a", ["old-1-long-line", "old-2-long-line"]), ("a", ["new"]), ("b", ["b" * 100])]


async def test_a_push_never_holds_more_lines_than_batch_max_bytes_unless_one_chunk_alone_is_larger() -> None:
    """batch_max_bytes is a ceiling (a proxy's or Loki's body limit is set from it): a chunk that
    would take the batch over it starts the next batch; only a chunk larger on its own goes alone."""
    clock = FakeClock()
    transport = FakeTransport(clock)
    harness = Harness(transport, clock, batch_max_bytes=2048)
    a = Origin("a", {"container_name": "a"})
    small = [chunk("a", [f"{offset + i:04d}".ljust(100, "x") for i in range(10)], offset, origin=a) for offset in range(0, 50, 10)]
    large = chunk("a", [f"{50 + i:04d}".ljust(100, "y") for i in range(30)], 50, origin=a)
    await harness.deliver(*small, large, chunk("a", ["tail"], 80, origin=a))
    sizes = [sum(len(line) for lines in post.streams.values() for line in lines) for post in transport.posts]
    assert sizes == [2000, 2000, 1000, 3000, 4]
    assert len(stored_lines(transport, "a")) == 81
