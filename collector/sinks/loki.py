"""The Loki sink, shaped like aiokafka's producer: an accumulator task closes batches (by size or by
the age of their oldest chunk) and encodes them; one sender task pushes them in order; a third
resends the streams Loki throttled (per-stream rate limit, active stream limit) in pushes of their
own, so one throttled container does not stall the others.

What each answer means is decided in `answer.py`; the network and the clock are behind
`transport.py`'s small interfaces, so all of this runs against a scripted fake in tests.

A batch is acknowledged (positions advance) when Loki stored it: 2xx, or a 400 whose valid
entries Loki kept. A container with a throttled stream has its acknowledgements held back until
that stream is delivered or given up (`loki.limit_retry_max`), so no position passes an entry
that was not stored. Nothing is dropped without being counted in `PushStats.dropped` and logged.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Protocol

from collector.config import LokiConfig
from collector.pipeline.entry import Chunk, Entry, Origin
from collector.pipeline.queue import ChunkQueue, QueueClosed
from collector.sinks.answer import Action, Verdict, interpret, rejections_in, sentence
from collector.sinks.base import Acknowledge
from collector.sinks.lokiproto import PushStream, encode_json, encode_push_request, label_string, snappy_block
from collector.sinks.transport import AiohttpTransport, Clock, RealClock, Transport, Unreachable, retry_after_seconds

__all__ = ["Batch", "LokiSink", "Push", "PushStats", "rejections_in"]

log = logging.getLogger(__name__)

StreamKey = tuple[int, str]  # (id of the Origin, stream name): one Loki stream of one batch
_MAX_EXPONENT = 30  # 2**30 * min_backoff is far above any max_backoff; beyond it floats overflow
# Entry fields read at C speed over whole chunks (map/sum/set), not in a Python loop per line.
_LINE, _STREAM_NAME, _ATTRS = itemgetter(1), itemgetter(2), itemgetter(3)
HOLD_LOG_INTERVAL = 60.0  # a refused push (401/403/404) is logged at most once a minute


@dataclass(slots=True)
class PushStats:
    entries_sent: int = 0
    bytes_sent: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # by status code or "error"
    retries: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by Loki's reason
    dropped: Counter[str] = field(default_factory=Counter)  # entries given up, by reason
    throttled: Counter[str] = field(default_factory=Counter)  # entries set aside for a resend, by cause
    last_push_ok: bool = True
    last_error: str = ""


@dataclass(slots=True)
class Push:
    """Entries of some streams, and their encoded request body once encoded."""

    streams: dict[StreamKey, list[Entry]] = field(default_factory=dict)
    origins: dict[StreamKey, Origin] = field(default_factory=dict)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    with_metadata: bool = False

    @property
    def entries(self) -> int:
        return sum(len(entries) for entries in self.streams.values())

    def labels_of(self, key: StreamKey) -> dict[str, str]:
        """The stream's labels as Loki sees them (it drops empty values)."""
        labels = {**self.origins[key].labels, "stream": key[1]}
        return {name: value for name, value in labels.items() if value != ""}

    def key_for(self, labels: dict[str, str]) -> StreamKey | None:
        return next((key for key in self.streams if self.labels_of(key) == labels), None)

    def only(self, key: StreamKey, entries: list[Entry]) -> Push:
        return Push({key: entries}, {key: self.origins[key]})

    def halves(self) -> tuple[Push, Push]:
        """Two pushes of about half the entries each (413: the body was too large)."""
        flat = [(key, entry) for key, entries in self.streams.items() for entry in entries]
        middle = len(flat) // 2
        return self._of(flat[:middle]), self._of(flat[middle:])

    def _of(self, pairs: list[tuple[StreamKey, Entry]]) -> Push:
        part = Push()
        for key, entry in pairs:
            part.streams.setdefault(key, []).append(entry)
            part.origins[key] = self.origins[key]
        return part


@dataclass(slots=True)
class Batch:
    chunks: list[Chunk] = field(default_factory=list)
    push: Push = field(default_factory=Push)
    line_bytes: int = 0  # what batch_max_bytes bounds
    entries: int = 0
    oldest: float = 0.0  # monotonic time its first chunk was taken from the queue

    @property
    def streams(self) -> dict[StreamKey, list[Entry]]:
        return self.push.streams


@dataclass(slots=True)
class _Throttled:
    """One stream Loki throttled: its entries still to resend, and since when it is throttled."""

    container_id: str
    origin: Origin
    name: str
    entries: list[Entry]
    reason: str
    since: float
    due: float
    attempt: int = 0
    max_entries: int = 0  # 0: no cap; halved on a 413

    @property
    def line_bytes(self) -> int:
        return sum(len(entry[1]) for entry in self.entries)


class PushObserver(Protocol):
    def pushed(self, entries: int, line_bytes: int, duration: float, entry_times_ns: list[int]) -> None: ...


# Structured metadata the sink sends only when `loki.structured_metadata` names it; any other key
# of an origin's metadata (a container's log attributes) is always sent.
OPTIONAL_METADATA = frozenset({"container_id", "image"})


class LokiSink:
    def __init__(self, config: LokiConfig, observer: PushObserver | None = None,
                 transport: Transport | None = None, clock: Clock | None = None) -> None:
        self.config = config
        self._observer = observer
        self.transport: Transport = transport or AiohttpTransport(config)
        self.clock: Clock = clock or RealClock()
        self.stats = PushStats()
        self.send_metadata = True  # until Loki says it refuses structured metadata
        self._metadata_keys = frozenset(config.structured_metadata)
        self._pending = 0  # batches closed but not yet acknowledged
        self._acknowledge: Acknowledge = lambda chunks: None
        # Throttled streams, by label string, and the chunks whose acknowledgement waits for them.
        self._throttled: dict[str, _Throttled] = {}
        self._held: dict[str, list[Chunk]] = {}
        self._throttled_changed = asyncio.Event()
        self._lane_room = asyncio.Event()
        self._lane_room.set()
        self._lane_max_bytes = 4 * config.batch_max_bytes  # what throttled streams may hold in memory
        # Health: since when no push has been answered usefully, and why pushes are refused (hold).
        self._failing_since: float | None = None
        self._hold = ""
        self._last_hold_log = -math.inf
        self._last_answer = ""  # Loki's last answer (or the connection error) as short text

    @property
    def pending(self) -> int:
        return self._pending + len(self._throttled)

    # -- what /ready asks ---------------------------------------------------------------------
    def not_ready_reason(self, not_ready_after: float) -> str | None:
        """A whole sentence when the sink cannot deliver (at once on a refusal such as 401, after
        `not_ready_after` seconds of failures otherwise); None when it delivers."""
        if self._hold:
            return self._hold
        if self._failing_since is None:
            return None
        failing_for = self.clock.monotonic() - self._failing_since
        if failing_for < not_ready_after:
            return None
        error = self.stats.last_error.rstrip(".")
        end = "" if error.endswith("…") else "."  # shortened at a word boundary: the ellipsis ends it
        return f"Loki has accepted no push for {failing_for:.0f} s; the last attempt failed with {error}{end}"

    # -- the tasks -----------------------------------------------------------------------------
    async def run(self, queue: ChunkQueue, acknowledge: Acknowledge) -> None:
        self._acknowledge = acknowledge
        ready: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=1)  # one batch ready while one is sent (see _close_batch)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._accumulate(queue, ready), name="loki-accumulator")
                resender = group.create_task(self._resend_throttled(), name="loki-throttled")
                await self._send_all(ready)
                while self._throttled:  # flush: throttled streams are delivered or given up too
                    self._throttled_changed.clear()
                    await self._throttled_changed.wait()
                resender.cancel()
        finally:
            await self.transport.close()

    async def _accumulate(self, queue: ChunkQueue, ready: asyncio.Queue[Batch | None]) -> None:
        max_bytes = self.config.batch_max_bytes
        max_wait = self.config.batch_max_wait
        batch = Batch()
        closed = False
        while not closed:
            if batch.chunks:
                timeout = batch.oldest + max_wait - self.clock.monotonic()
                chunk = None
                if timeout > 0:
                    try:
                        async with asyncio.timeout(timeout):
                            chunk = await queue.get()
                    except TimeoutError:
                        pass
                    except QueueClosed:
                        closed = True
            else:
                try:
                    chunk = await queue.get()
                except QueueClosed:
                    break
            if chunk is not None:
                self._add(batch, chunk)
                if batch.line_bytes < max_bytes:
                    continue
            await self._close_batch(batch, ready)
            batch = Batch()
        await self._close_batch(batch, ready)
        await ready.put(None)

    async def _close_batch(self, batch: Batch, ready: asyncio.Queue[Batch | None]) -> None:
        if batch.chunks:
            self._pending += 1
            if batch.entries:
                # On the loop: 1 MiB of lines encodes and compresses in ~10 ms (within the loop-lag
                # budget, see collector_event_loop_lag_seconds). A thread saved no CPU (the GIL) and
                # its own malloc arena kept ~18 MiB more RSS in the backlog benchmark.
                self._encode_into(batch.push)
            await ready.put(batch)
            # The next batch is started once the sender has taken this one: at most two batches
            # (one being sent, one ready) hold entries beside the queue, not a third one waiting.
            await ready.join()

    async def _send_all(self, ready: asyncio.Queue[Batch | None]) -> None:
        while (batch := await ready.get()) is not None:
            ready.task_done()
            if batch.entries:
                await self._lane_room.wait()  # throttled streams hold entries in memory: bounded
                duration = await self._deliver(batch.push) if self._divert_throttled(batch.push) else None
                if self._observer is not None and duration is not None:
                    newest = [chunk.entries[-1].ts_ns for chunk in batch.chunks if chunk.entries]
                    self._observer.pushed(batch.entries, batch.line_bytes, duration, newest)
            self._pending -= 1
            self._ack(batch.chunks)

    def _divert_throttled(self, push: Push) -> bool:
        """New entries of a stream Loki is throttling join its resend queue (in order, in pushes of
        their own, where Loki always reports a throttle). False when nothing else is left to push."""
        diverted = False
        for key in list(push.streams):
            item = self._throttled.get(label_string(push.labels_of(key)))
            if item is not None:
                item.entries.extend(push.streams.pop(key))
                del push.origins[key]
                self._held.setdefault(item.container_id, [])
                diverted = True
        if diverted:
            push.body = b""  # re-encoded without the diverted streams
            self._lane_changed()
        return bool(push.streams)

    def _ack(self, chunks: list[Chunk]) -> None:
        """Acknowledge, except chunks of a container whose throttled stream is still unsent."""
        now: list[Chunk] = []
        for chunk in chunks:
            held = self._held.get(chunk.origin.container_id)
            if held is None:
                now.append(chunk)
            else:
                held.append(chunk)
        if now:
            self._acknowledge(now)

    # -- batching --------------------------------------------------------------------------------
    def _add(self, batch: Batch, chunk: Chunk) -> None:
        if not batch.chunks:
            batch.oldest = self.clock.monotonic()
        batch.chunks.append(chunk)
        if not chunk.entries:
            return
        batch.entries += len(chunk.entries)
        entries = chunk.entries
        batch.line_bytes += sum(map(len, map(_LINE, entries)))
        if len(set(map(_STREAM_NAME, entries))) == 1:  # the usual chunk: one stream, no loop per entry
            self._entries_of(batch, chunk.origin, entries[0][2]).extend(entries)
            return
        current_name = ""
        current: list[Entry] = []
        for entry in entries:
            if entry[2] != current_name:  # look up only on a switch of stream
                current_name = entry[2]
                current = self._entries_of(batch, chunk.origin, current_name)
            current.append(entry)

    @staticmethod
    def _entries_of(batch: Batch, origin: Origin, name: str) -> list[Entry]:
        """The batch's entries of this container's stream `name` (made on first use)."""
        key = (id(origin), name)
        entries = batch.push.streams.get(key)
        if entries is None:
            entries = batch.push.streams[key] = []
            batch.push.origins[key] = origin
        return entries

    def _encode_into(self, push: Push) -> None:
        push.with_metadata = self.send_metadata
        push.body, push.headers = self.encode(push)

    def encode(self, push: Push) -> tuple[bytes, dict[str, str]]:
        """The body and its content headers, with or without structured metadata as Loki allows."""
        streams = []
        labels_of: dict[str, dict[str, str]] = {}
        # Largest stream last: Loki's ingester reports only the last stream's failure, and the
        # largest is the one most likely to hit its per-stream rate limit.
        for key, entries in sorted(push.streams.items(), key=lambda item: sum(map(len, map(_LINE, item[1])))):
            origin = push.origins[key]
            labels = {**origin.labels, "stream": key[1]}
            text = label_string(labels)
            labels_of[text] = labels
            metadata = (
                tuple((name, value) for name, value in origin.metadata.items()
                      if value and (name in self._metadata_keys or name not in OPTIONAL_METADATA))
                if self.send_metadata else ()
            )
            per_entry = self.send_metadata and any(map(_ATTRS, entries))
            streams.append(PushStream(text, entries, metadata, per_entry))
        if self.config.encoding == "json":
            body = encode_json(streams, labels_of)
            headers = {"Content-Type": "application/json"}
            if self.config.gzip:
                body = gzip.compress(body, compresslevel=5)
                headers["Content-Encoding"] = "gzip"
            return body, headers
        return snappy_block(encode_push_request(streams)), {"Content-Type": "application/x-protobuf"}

    # -- delivering one batch ----------------------------------------------------------------------
    async def _deliver(self, push: Push) -> float | None:
        """Until every entry of `push` is stored, set aside (throttled stream) or counted as
        dropped. The duration of the last request Loki stored, None if none."""
        work = [push]
        duration: float | None = None
        attempt = 0
        while work:
            part = work.pop()
            verdict, took = await self._push_until_answered(part)
            action = verdict.action
            if action in (Action.STORED, Action.REJECTED):
                duration = took
            elif action is Action.SPLIT:
                self._split(part, work)
            elif action is Action.STREAM_THROTTLED:
                key = part.key_for(verdict.stream or {})
                if key is None:  # names a stream we did not send (should not happen): resend it all
                    await self._wait_backoff(attempt, None, f"Loki throttled a stream it names as {verdict.stream}")
                    attempt += 1
                    work.append(part)
                    continue
                self._set_aside(part, key, verdict)
            elif action is Action.DROP:
                self._drop(part.entries, verdict.reason, "Loki refused the push; its entries are dropped",
                           containers=sorted({part.origins[key].labels.get("container_name", "") for key in part.streams}))
        return duration

    async def _push_until_answered(self, push: Push) -> tuple[Verdict, float]:
        """Push until Loki answers something other than "try again": retries connection errors,
        5xx and the tenant's rate limit with backoff, holds on 401/403/404, forever: the log files
        are the buffer, and shutdown's flush deadline is what ends a hopeless wait."""
        attempt = 0
        while True:
            verdict, took, retry_after = await self._push_once(push)
            if verdict.action is Action.RETRY:
                await self._wait_backoff(attempt, retry_after, self.stats.last_error)
                attempt += 1
                continue
            if verdict.action is Action.HOLD:
                await self._wait_hold(verdict, retry_after)
                continue
            return verdict, took

    async def _push_once(self, push: Push) -> tuple[Verdict, float, float | None]:
        """One request, with its bookkeeping; METADATA_OFF is handled here (resent at once)."""
        while True:
            if not push.body or push.with_metadata != self.send_metadata:
                self._encode_into(push)  # encoded before Loki told us it refuses metadata
            started = self.clock.monotonic()
            retry_after = None
            try:
                reply = await self.transport.post(push.body, push.headers)
                status, text = reply.status, reply.body
                retry_after = retry_after_seconds(reply.retry_after, self.clock.wall())
            except Unreachable as err:
                status, text = 0, str(err)
            took = self.clock.monotonic() - started
            self.stats.requests[str(status) if status else "error"] += 1
            verdict = interpret(status, text)
            if verdict.action is Action.METADATA_OFF and push.with_metadata:
                if self.send_metadata:
                    self.send_metadata = False
                    log.warning("Loki does not accept structured metadata; sending without it from now on",
                                extra={"response": sentence(text, 300)})
                continue
            if verdict.action is Action.METADATA_OFF:
                verdict = Verdict(Action.REJECTED, rejected=rejections_in(text))
            self._account(push, verdict, status, text)
            return verdict, took, retry_after

    def _account(self, push: Push, verdict: Verdict, status: int, text: str) -> None:
        action = verdict.action
        self._last_answer = f"HTTP {status}: {sentence(text, 200)}" if status else sentence(text, 200)
        if action in (Action.RETRY, Action.HOLD):
            if self._failing_since is None:
                self._failing_since = self.clock.monotonic()
            self.stats.last_push_ok = False
            self.stats.last_error = self._last_answer
            if action is Action.RETRY:
                self._hold = ""  # e.g. a 401 turned into a 503: no longer a credentials problem
            return
        # Loki answered and took what it could: the pipe works.
        self._failing_since = None
        self.stats.last_push_ok = True
        if self._hold:
            log.info("Loki accepts pushes again", extra={"status": status})
            self._hold = ""
        if action is Action.STORED:
            self.stats.entries_sent += push.entries
            self.stats.bytes_sent += len(push.body)
        elif action is Action.REJECTED:
            # Loki stored the valid entries; the named ones are rejected for good: never resend.
            rejected = verdict.rejected
            self.stats.rejected.update(rejected)
            self.stats.entries_sent += max(0, push.entries - sum(rejected.values()))
            self.stats.bytes_sent += len(push.body)
            log.warning("Loki rejected entries", extra={"rejected": dict(rejected), "response": sentence(text, 1000)})

    async def _wait_backoff(self, attempt: int, retry_after: float | None, error: str) -> None:
        delay = self._backoff(attempt, retry_after)
        self.stats.retries += 1
        log.warning("push failed; retrying", extra={"error": error, "attempt": attempt + 1, "retry_in_s": round(delay, 3)})
        await self.clock.sleep(delay)

    async def _wait_hold(self, verdict: Verdict, retry_after: float | None) -> None:
        status = int(verdict.reason.removeprefix("http_"))
        self._hold = _hold_sentence(status, self.config.max_backoff)
        self.stats.retries += 1
        now = self.clock.monotonic()
        if now - self._last_hold_log >= HOLD_LOG_INTERVAL:
            self._last_hold_log = now
            log.error("Loki refuses the pushes; holding every entry and retrying",
                      extra={"error": self.stats.last_error, "why": self._hold, "retry_in_s": self.config.max_backoff})
        delay = self.config.max_backoff if retry_after is None else min(retry_after, self.config.max_backoff)
        await self.clock.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Jittered exponential backoff, capped at max_backoff; Retry-After honoured up to max_backoff."""
        if retry_after is not None:
            return min(retry_after, self.config.max_backoff)
        ceiling = min(self.config.max_backoff, self.config.min_backoff * (2 ** min(attempt, _MAX_EXPONENT)))
        return ceiling * (0.5 + random.random() / 2)  # jitter: clients that failed together spread out

    def _split(self, part: Push, work: list[Push]) -> None:
        if part.entries <= 1:
            self._drop(part.entries, "too_large", "Loki refuses a single entry as too large (413); it is dropped")
            return
        first, second = part.halves()
        work.extend((second, first))  # first half goes first: keeps the order of the entries

    def _drop(self, entries: int, reason: str, message: str, containers: list[str] | None = None) -> None:
        if entries:
            self.stats.dropped[reason] += entries
            which = {"containers": containers[:20]} if containers else {}  # whose lines are gone, for the operator
            log.error(message, extra={"entries": entries, "reason": reason, "answer": self._last_answer, **which})

    # -- throttled streams -------------------------------------------------------------------------
    def _set_aside(self, push: Push, key: StreamKey, verdict: Verdict) -> None:
        """Loki stored every other stream of the push; keep the named stream's unstored entries
        for the resender, and hold back acknowledgements of its container meanwhile."""
        entries = push.streams[key]
        unstored = _unstored(entries, verdict)
        self.stats.entries_sent += push.entries - len(unstored)
        self.stats.bytes_sent += len(push.body)
        self.stats.throttled[verdict.reason] += len(unstored)
        origin = push.origins[key]
        text = label_string(push.labels_of(key))
        now = self.clock.monotonic()
        item = self._throttled.get(text)
        if item is None:
            item = self._throttled[text] = _Throttled(origin.container_id, origin, key[1], [], verdict.reason, now,
                                                      now + self._backoff(0, None))
            log.warning("Loki throttles a stream; resending its entries on their own",
                        extra={"stream": text, "reason": verdict.reason, "entries": len(unstored),
                               "gives_up_after_s": self.config.limit_retry_max})
        item.entries.extend(unstored)
        self._held.setdefault(origin.container_id, [])
        self._lane_changed()

    def _lane_changed(self) -> None:
        self._throttled_changed.set()
        if sum(item.line_bytes for item in self._throttled.values()) > self._lane_max_bytes:
            self._lane_room.clear()
        else:
            self._lane_room.set()

    async def _resend_throttled(self) -> None:
        while True:
            if not self._throttled:
                self._throttled_changed.clear()
                await self._throttled_changed.wait()
                continue
            item = min(self._throttled.values(), key=lambda it: it.due)
            wait = item.due - self.clock.monotonic()
            if wait > 0:
                self._throttled_changed.clear()  # a newly throttled stream may be due sooner
                await self.clock.wait_event(self._throttled_changed, wait)
                continue
            await self._resend(item)

    async def _resend(self, item: _Throttled) -> None:
        count = len(item.entries) if not item.max_entries else min(item.max_entries, len(item.entries))
        taken = self._take(item, count)
        key = (id(item.origin), item.name)
        push = Push({key: taken}, {key: item.origin})
        verdict, _took, retry_after = await self._push_once(push)
        now = self.clock.monotonic()
        action = verdict.action
        if action in (Action.STORED, Action.REJECTED):
            del item.entries[:len(taken)]
            item.attempt = 0
            item.due = now
        elif action is Action.DROP:
            del item.entries[:len(taken)]
            self._drop(len(taken), verdict.reason, "Loki refused a throttled stream's push; its entries are dropped")
        elif action is Action.SPLIT:
            if len(taken) <= 1:
                del item.entries[:len(taken)]
                self._drop(len(taken), "too_large", "Loki refuses a single entry as too large (413); it is dropped")
            else:
                item.max_entries = max(1, len(taken) // 2)
        else:
            if action is Action.STREAM_THROTTLED:
                remaining = _unstored(taken, verdict)  # Loki stored the others of this push
                self.stats.entries_sent += len(taken) - len(remaining)
                item.entries[:len(taken)] = remaining
            else:
                item.since = now  # Loki down or refusing: not a throttle; limit_retry_max counts throttling only
            if action is Action.HOLD:
                await self._wait_hold(verdict, retry_after)
            item.attempt += 1
            item.due = now + self._backoff(item.attempt, retry_after)
            if action is Action.STREAM_THROTTLED and now - item.since >= self.config.limit_retry_max:
                self._drop(len(item.entries), item.reason,
                           "a throttled stream was not accepted within loki.limit_retry_max; its entries are dropped")
                item.entries.clear()
        if not item.entries:
            self._finish(item)
        self._lane_changed()

    def _take(self, item: _Throttled, count: int) -> list[Entry]:
        """At most `count` entries and at most batch_max_bytes of lines (always at least one)."""
        taken: list[Entry] = []
        size = 0
        for entry in item.entries[:count]:
            size += len(entry[1])
            if taken and size > self.config.batch_max_bytes:
                break
            taken.append(entry)
        return taken

    def _finish(self, item: _Throttled) -> None:
        text = next(text for text, it in self._throttled.items() if it is item)
        del self._throttled[text]
        container_id = item.container_id
        if not any(it.container_id == container_id for it in self._throttled.values()):
            held = self._held.pop(container_id, [])
            if held:
                self._acknowledge(held)


def _unstored(entries: list[Entry], verdict: Verdict) -> list[Entry]:
    """The entries of a throttled stream Loki did not store. Loki lists the first ten it ignored
    and counts them all. Its limiter takes entries in order and ignores each one once the
    stream's tokens run out, so the ignored ones run from the first listed to the end (a later,
    smaller entry may still have fitted: resent, it is a duplicate, never a loss)."""
    if not verdict.ignored or not verdict.ignored_ts_ns or verdict.ignored >= len(entries):
        return entries
    if verdict.ignored_known():  # every ignored entry is listed: exactly those
        wanted = Counter(verdict.ignored_ts_ns)
        listed = []
        for entry in entries:
            if wanted[entry.ts_ns] > 0:
                wanted[entry.ts_ns] -= 1
                listed.append(entry)
        return listed if len(listed) == verdict.ignored else entries
    first = verdict.ignored_ts_ns[0]
    start = next((index for index, entry in enumerate(entries) if entry.ts_ns == first), 0)
    return entries[start:]


def _hold_sentence(status: int, retry_every: float) -> str:
    what = {
        401: "HTTP 401 Unauthorized: check loki.username and loki.password, or loki.bearer_token",
        403: "HTTP 403 Forbidden: check the credentials and loki.tenant",
        404: "HTTP 404 Not Found: check loki.url (the push path is /loki/api/v1/push)",
        405: "HTTP 405 Method Not Allowed: check loki.url (the push path is /loki/api/v1/push)",
        407: "HTTP 407 Proxy Authentication Required: check the proxy credentials",
    }.get(status, f"HTTP {status}")
    return f"Loki refuses the pushes with {what}. Every entry is kept and retried every {retry_every:g} s."
