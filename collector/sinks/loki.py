"""The Loki sink, shaped like aiokafka's producer: an accumulator task closes batches (by size or by
the age of their oldest chunk) and encodes them; one sender task pushes them in order; a pacer
sends the streams Loki throttles on their own, at the rate Loki allows (`throttle.py`), so one
throttled container never stalls the others.

What each answer means is decided in `answer.py`; the network and the clock are behind
`transport.py`'s small interfaces, so all of this runs against a scripted fake in tests.

Entries are acknowledged per chunk (`acks.py`): a chunk when every entry of it is stored (2xx, or
a 400 whose valid entries Loki kept) or counted as dropped, and a container's chunks in read
order, so no position passes an entry that was not stored. Nothing is dropped without being
counted in `PushStats.dropped` and logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.config import LokiConfig
from collector.pipeline.entry import Chunk, Entry
from collector.pipeline.queue import ChunkQueue, QueueClosed
from collector.sinks.acks import AckLedger
from collector.sinks.answer import SHARD_LABEL, Action, Verdict, interpret, matching, rejections_in, sentence
from collector.sinks.base import Acknowledge
from collector.sinks.batch import Batch, Piece, Push, line_bytes
from collector.sinks.encoding import PushEncoder
from collector.sinks.health import SinkHealth
from collector.sinks.throttle import Throttle
from collector.sinks.transport import AiohttpTransport, Clock, RealClock, Transport, Unreachable, retry_after_seconds

__all__ = ["Batch", "LokiSink", "Push", "PushStats", "rejections_in"]

log = logging.getLogger(__name__)

_MAX_EXPONENT = 30  # 2**30 * min_backoff is far above any max_backoff; beyond it floats overflow


@dataclass(slots=True)
class PushStats:
    entries_sent: int = 0
    bytes_sent: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # by status code or "error"
    retries: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by Loki's reason
    dropped: Counter[str] = field(default_factory=Counter)  # entries given up, by reason
    throttled: Counter[str] = field(default_factory=Counter)  # entries set aside for a paced resend, by cause
    streams_throttled: int = 0  # label sets paced now
    last_push_ok: bool = True
    last_error: str = ""


class PushObserver(Protocol):
    def pushed(self, entries: int, line_bytes: int, duration: float, entry_times_ns: list[int]) -> None: ...


class LokiSink:
    def __init__(self, config: LokiConfig, observer: PushObserver | None = None,
                 transport: Transport | None = None, clock: Clock | None = None) -> None:
        self.config = config
        self._observer = observer
        self.transport: Transport = transport or AiohttpTransport(config)
        self.clock: Clock = clock or RealClock()
        self.stats = PushStats()
        self.health = SinkHealth()
        self.encoder = PushEncoder(config)
        self._acknowledge: Acknowledge = lambda chunks: None
        self.ledger = AckLedger(lambda chunks: self._acknowledge(chunks))
        self._queue: ChunkQueue | None = None
        self.throttle = Throttle(
            sizer=self.encoder.loki_size, pause=self._pause, resume=self._resume, resolve=self.ledger.resolve, drop=self._drop,
            batch_max_bytes=config.batch_max_bytes, min_backoff=config.min_backoff, max_backoff=config.max_backoff,
            give_up_after=config.limit_retry_max)
        self._throttle_changed = asyncio.Event()
        # Room for more chunks while throttled streams hold entries: the pause keeps them to about a
        # push plus what was queued, but what the spool reads back was written before any pause.
        self._throttle_room = asyncio.Event()
        self._throttle_room.set()
        self._throttle_max_bytes = 0  # set in run(): the queue's bound and two batches
        self._other_2xx_logged: set[int] = set()

    @property
    def pending(self) -> int:
        """Chunks taken from the queue and not yet acknowledged."""
        return len(self.ledger)

    def held(self) -> list[Chunk]:
        """Chunks read from sources (not from a spool) that Loki does not have yet, in read order per container."""
        return [chunk for chunk in self.ledger.unacknowledged() if chunk.spooled is None]

    def not_ready_reason(self, not_ready_after: float) -> str | None:
        return self.health.not_ready_reason(self.clock.monotonic(), not_ready_after, self.stats.last_error)

    def throttled_streams(self) -> list[dict[str, Any]]:
        return self.throttle.view(self.clock.monotonic())

    # -- the tasks -----------------------------------------------------------------------------
    async def run(self, queue: ChunkQueue, acknowledge: Acknowledge) -> None:
        self._acknowledge = acknowledge
        self._queue = queue
        self._throttle_max_bytes = queue.max_bytes + 2 * self.config.batch_max_bytes
        ready: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=1)  # one batch ready while one is sent (see _close_batch)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._accumulate(queue, ready), name="loki-accumulator")
                pacer = group.create_task(self._pace_throttled(), name="loki-throttled")
                await self._send_all(ready)
                while self.throttle.pending:  # flush: throttled streams are delivered or given up too
                    self._throttle_changed.clear()
                    await self._throttle_changed.wait()
                pacer.cancel()
        finally:
            self.throttle.forget_all()
            await self.transport.close()

    def _pause(self, container_id: str) -> None:
        if self._queue is not None:
            self._queue.pause(container_id)

    def _resume(self, container_id: str) -> None:
        if self._queue is not None:
            self._queue.resume(container_id)

    def _throttle_moved(self) -> None:
        self._throttle_changed.set()
        if self.throttle.queued_bytes > self._throttle_max_bytes > 0:
            self._throttle_room.clear()
        else:
            self._throttle_room.set()

    async def _accumulate(self, queue: ChunkQueue, ready: asyncio.Queue[Batch | None]) -> None:
        max_bytes = self.config.batch_max_bytes
        max_wait = self.config.batch_max_wait
        batch = Batch()
        closed = False
        while not closed:
            if batch.chunks:
                timeout = batch.oldest + max_wait - self.clock.monotonic()
                chunk = None
                if timeout > 0 and self._throttle_room.is_set():  # else throttled streams hold all they may
                    try:
                        async with asyncio.timeout(timeout):
                            chunk = await queue.get()
                    except TimeoutError:
                        pass
                    except QueueClosed:
                        closed = True
            else:
                await self._throttle_room.wait()  # bounded: never more held for throttled streams than this
                try:
                    chunk = await queue.get()
                except QueueClosed:
                    break
            if chunk is not None:
                size = line_bytes(chunk)
                if batch.chunks and batch.line_bytes + size > max_bytes:  # a ceiling: it starts the next one
                    await self._close_batch(batch, ready)
                    batch = Batch()
                self._add(batch, chunk, size)
                if batch.line_bytes < max_bytes:
                    continue
            await self._close_batch(batch, ready)
            batch = Batch()
        await self._close_batch(batch, ready)
        await ready.put(None)

    def _add(self, batch: Batch, chunk: Chunk, size: int) -> None:
        if not batch.chunks:
            batch.oldest = self.clock.monotonic()
        self.ledger.track(chunk, batch.add(chunk, size))

    async def _close_batch(self, batch: Batch, ready: asyncio.Queue[Batch | None]) -> None:
        if batch.entries:
            # On the loop: 1 MiB of lines encodes and compresses in ~10 ms (within the loop-lag
            # budget, see collector_event_loop_lag_seconds). A thread saved no CPU (the GIL) and
            # its own malloc arena kept ~18 MiB more RSS in the backlog benchmark.
            if not self.throttle.sets:  # else encoded once the paced streams have left it
                self.encoder.encode_into(batch.push)
            await ready.put(batch)
            # The next batch is started once the sender has taken this one: at most two batches
            # (one being sent, one ready) hold entries beside the queue, not a third one waiting.
            await ready.join()

    async def _send_all(self, ready: asyncio.Queue[Batch | None]) -> None:
        while (batch := await ready.get()) is not None:
            ready.task_done()
            duration = await self._deliver(batch.push)
            if self._observer is not None and duration is not None:
                self._observer.pushed(batch.entries, batch.line_bytes, duration, batch.newest_ts_ns)

    # -- delivering one batch ----------------------------------------------------------------------
    async def _deliver(self, push: Push) -> float | None:
        """Until every entry of `push` is stored, set aside (throttled stream) or counted as
        dropped. The duration of the last request Loki stored, None if none."""
        work = [push]
        duration: float | None = None
        while work:
            part = work.pop()
            if not self.throttle.divert(part, self.clock.monotonic()):
                self._throttle_moved()
                continue  # all of it belongs to paced streams now
            if self.throttle.sets:
                self._throttle_moved()
            verdict, took = await self._push_until_answered(part)
            action = verdict.action
            if action in (Action.STORED, Action.REJECTED):
                duration = took
                self._resolve(part.pieces.values())
            elif action is Action.SPLIT:
                self._split(part, work)
            elif action is Action.STREAM_THROTTLED:
                self._throttled(part, verdict, work)
            elif action is Action.DROP:
                self._drop(part.entries, verdict.reason, "Loki refused the push; its entries are dropped",
                           sorted({part.origins[key].labels.get("container_name", "") for key in part.streams}))
                self._resolve(part.pieces.values())
        return duration

    def _resolve(self, pieces: Iterable[Piece]) -> None:
        self.ledger.resolve(list(pieces))

    def _throttled(self, part: Push, verdict: Verdict, work: list[Push]) -> None:
        """Loki refused the stream it names, at least (it reports only the last stream of a push;
        an earlier one may have been refused unseen). A push of one stream: that stream, its
        unstored entries paced from now on. Otherwise the named stream is paced, if Loki's name
        stands for exactly one sent stream, and every other stream is resent alone, so that each
        gets an answer of its own (a duplicate at worst, never a loss)."""
        named = verdict.stream or {}
        keys = list(part.streams) if len(part.streams) == 1 else matching(named, part.label_sets())
        if len(keys) != 1:
            log.info("Loki throttled a stream of a push that cannot be told apart; resending each stream alone",
                     extra={"named_by_loki": named, "streams": len(part.streams), "matching": len(keys)})
            work.extend(part.only(key) for key in reversed(list(part.streams)))
            return
        key = keys[0]
        entries = part.streams[key]
        unstored = entries if SHARD_LABEL in named else _unstored(entries, verdict)
        self.stats.entries_sent += len(entries) - len(unstored)
        self.throttle.set_aside(part, key, unstored, verdict, self.clock.monotonic())
        self.stats.throttled[verdict.reason] += len(unstored)
        self._throttle_moved()
        work.extend(part.only(other) for other in reversed(list(part.streams)) if other != key)

    async def _push_until_answered(self, push: Push) -> tuple[Verdict, float]:
        """Push until Loki answers something other than "try again": retries connection errors,
        5xx and the tenant's rate limit with backoff, holds on 401/403/404 and blocked ingestion,
        forever: the log files are the buffer, and shutdown's flush deadline is what ends a
        hopeless wait."""
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
            if not push.body or push.with_metadata != self.encoder.send_metadata:
                self.encoder.encode_into(push)  # encoded before Loki told us it refuses metadata, or cut down since
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
                if self.encoder.send_metadata:
                    self.encoder.send_metadata = False
                    log.warning("Loki does not accept structured metadata; sending without it from now on",
                                extra={"response": sentence(text, 300)})
                continue
            if verdict.action is Action.METADATA_OFF:
                verdict = Verdict(Action.REJECTED, rejected=rejections_in(text))
            self._account(push, verdict, status, text)
            return verdict, took, retry_after

    def _account(self, push: Push, verdict: Verdict, status: int, text: str) -> None:
        action = verdict.action
        health = self.health
        health.answered(status, text)
        if action in (Action.RETRY, Action.HOLD):
            health.failing(self.clock.monotonic(), retrying=action is Action.RETRY)
            self.stats.last_push_ok = False
            self.stats.last_error = health.last_answer
            return
        # Loki answered and took what it could: the pipe works.
        health.working(status)
        self.stats.last_push_ok = True
        if action is Action.STORED:
            self.stats.entries_sent += push.entries
            self.stats.bytes_sent += len(push.body)
            if verdict.reason and status not in self._other_2xx_logged:
                self._other_2xx_logged.add(status)
                log.warning("Loki answered a push with an unusual 2xx; taken as stored (logged once per status)",
                            extra={"status": status, "response": sentence(text, 300)})
        elif action is Action.REJECTED:
            # Loki stored the valid entries; the named ones are rejected for good: never resend.
            rejected = verdict.rejected
            self.stats.rejected.update(rejected)
            self.stats.entries_sent += max(0, push.entries - sum(rejected.values()))
            self.stats.bytes_sent += len(push.body)
            log.warning("Loki rejected entries", extra={"rejected": dict(rejected), "response": sentence(text, 1000)})
        elif action is Action.STREAM_THROTTLED:
            self.stats.bytes_sent += len(push.body)

    async def _wait_backoff(self, attempt: int, retry_after: float | None, error: str) -> None:
        delay = self._backoff(attempt, retry_after)
        self.stats.retries += 1
        log.warning("push failed; retrying", extra={"error": error, "attempt": attempt + 1, "retry_in_s": round(delay, 3)})
        await self.clock.sleep(delay)

    async def _wait_hold(self, verdict: Verdict, retry_after: float | None) -> None:
        delay = self.config.max_backoff if retry_after is None else min(retry_after, self.config.max_backoff)
        if verdict.until_wall:  # blocked ingestion ends at a time Loki named: try again then
            delay = min(delay, max(self.config.min_backoff, verdict.until_wall - self.clock.wall()))
        self.stats.retries += 1
        self.health.holding(verdict, delay, self.clock.monotonic(), self.stats.last_error)
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
            self._resolve(part.pieces.values())
            return
        first, second = part.halves()
        work.extend((second, first))  # first half goes first: keeps the order of the entries

    def _drop(self, entries: int, reason: str, message: str, containers: list[str] | None = None) -> None:
        if entries:
            self.stats.dropped[reason] += entries
            which = {"containers": containers[:20]} if containers else {}  # whose lines are gone, for the operator
            log.error(message, extra={"entries": entries, "reason": reason, "answer": self.health.last_answer, **which})

    # -- throttled streams -------------------------------------------------------------------------
    async def _pace_throttled(self) -> None:
        throttle = self.throttle
        while True:
            item, wait = throttle.next_due(self.clock.monotonic())
            self.stats.streams_throttled = len(throttle.sets)
            if item is None or wait > 0:
                self._throttle_changed.clear()  # a newly throttled stream may be due sooner
                if wait == float("inf"):
                    await self._throttle_changed.wait()
                else:
                    await self.clock.wait_event(self._throttle_changed, wait)
                continue
            push, taken = throttle.take(item, self.clock.monotonic())
            verdict, _took, retry_after = await self._push_once(push)
            if verdict.action is Action.HOLD:
                await self._wait_hold(verdict, retry_after)
            entries = [entry for segment in taken for entry in segment.entries]
            unstored = entries if verdict.action is not Action.STREAM_THROTTLED else _unstored(entries, verdict)
            if verdict.action is Action.STREAM_THROTTLED:
                self.stats.entries_sent += len(entries) - len(unstored)
            throttle.settle(item, taken, verdict, unstored, retry_after, self.clock.monotonic())
            self._throttle_moved()


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
