"""Streams Loki throttles, sent on their own at the rate Loki allows them.

Loki's ingester limits each stream (`per_stream_rate_limit`, "limit: 256KB/sec" in its 429) and
the number of streams (`max_global_streams_per_user`). A label set it throttles is kept here:
its unstored entries, and every later entry of it, wait in a FIFO of segments and go out in
pushes of that one stream (so Loki's answer is always about it), paced by a token bucket a little
under the limit Loki named; without a rate (the stream limit), with backoff. Nothing else waits
for it: other label sets keep their own pushes.

Bounded: while a label set has a push's worth queued, the containers that feed it are paused at
the queue (they read nothing more; their log file or socket is the buffer). Pacing is per label
set (what Loki limits); what was stored is resolved per piece, so acknowledgements stay per
container and in read order (two containers may share one label set).

`loki.limit_retry_max` counts time without progress: a label set Loki takes slowly is never
given up; one that it refuses for that long is dropped, counted and logged. An outage is no
throttle and does not count.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from collector.pipeline.entry import Entry, Origin
from collector.sinks.answer import SHARD_LABEL, Action, Verdict
from collector.sinks.batch import Piece, Push, StreamKey
from collector.sinks.lokiproto import label_string

log = logging.getLogger(__name__)

PACE = 0.9  # of Loki's limit: its limiter and our clock do not agree to the byte
FORGET_AFTER = 30.0  # a paced label set with nothing queued for this long is forgotten
MIN_PUSH_BYTES = 1024


@dataclass(slots=True)
class Segment:
    """Entries of one container's stream waiting to be resent, holding one part of their piece."""

    key: StreamKey
    origin: Origin
    entries: list[Entry]
    piece: Piece
    nbytes: int  # as Loki counts them: lines and structured metadata


@dataclass(slots=True)
class Throttled:
    """One label set Loki throttles."""

    labels: str  # the label string the collector sends
    named_as: str  # how Loki named it (with the labels it adds)
    reason: str
    since: float  # monotonic
    since_wall: float
    rate: float  # bytes/s paced (0: Loki named no rate; backoff instead)
    push_cap: int  # bytes of one push
    last_progress: float
    segments: deque[Segment] = field(default_factory=deque)
    queued_bytes: int = 0
    tokens: float = 0.0
    refilled: float = 0.0
    not_before: float = 0.0  # backoff after a refusal or an outage
    attempt: int = 0
    idle_since: float | None = None
    containers: dict[str, str] = field(default_factory=dict)  # id -> name, that feed it
    delivered_bytes: int = 0
    delivered_entries: int = 0

    def next_push_bytes(self) -> int:
        return min(self.push_cap, self.queued_bytes) if self.segments else 0

    def ready_at(self, now: float) -> float:
        """When the next push may go."""
        if not self.rate:
            return self.not_before
        tokens = min(self.push_cap, self.tokens + (now - self.refilled) * self.rate)
        short = max(self.next_push_bytes(), 1) - tokens
        return max(self.not_before, now + short / self.rate if short > 0 else now)


Sizer = Callable[[Origin, list[Entry]], int]


class Throttle:
    def __init__(self, *, sizer: Sizer, pause: Callable[[str], None], resume: Callable[[str], None],
                 resolve: Callable[[Iterable[Piece]], None], drop: Callable[[int, str, str, list[str]], None],
                 batch_max_bytes: int, min_backoff: float, max_backoff: float, give_up_after: float) -> None:
        self._size = sizer
        self._pause = pause
        self._resume = resume
        self._resolve = resolve
        self._drop = drop
        self._batch_max_bytes = batch_max_bytes
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._give_up_after = give_up_after
        self.sets: dict[str, Throttled] = {}

    @property
    def queued_bytes(self) -> int:
        return sum(item.queued_bytes for item in self.sets.values())

    @property
    def pending(self) -> bool:
        """Entries still queued here."""
        return any(item.segments for item in self.sets.values())

    # -- entries in ----------------------------------------------------------------------------
    def divert(self, push: Push, now: float) -> bool:
        """Streams of a paced label set leave the push for their FIFO (their order kept). True if
        anything is left to push."""
        if not self.sets:
            return True
        for key, labels in push.label_sets().items():
            item = self.sets.get(label_string(labels))
            if item is not None:
                self._queue(item, self._segment(push, key, push.streams[key]), now)
                del push.streams[key], push.origins[key], push.pieces[key]
                push.body = b""  # re-encoded without them
        return bool(push.streams)

    def set_aside(self, push: Push, key: StreamKey, unstored: list[Entry], verdict: Verdict, now: float) -> None:
        """Loki throttled this stream of the push: its unstored entries wait here (the stream's
        part of its piece with them), and its label set is paced from now on."""
        labels = push.labels_of(key)
        text = label_string(labels)
        item = self.sets.get(text)
        if item is None:
            item = self.sets[text] = self._new(text, verdict, now)
        else:
            self._learn(item, verdict, now)
        if unstored:
            self._queue(item, self._segment(push, key, unstored), now)
        else:
            self._resolve([push.pieces[key]])

    def _new(self, text: str, verdict: Verdict, now: float) -> Throttled:
        named = label_string(verdict.stream or {})
        item = Throttled(text, named, verdict.reason, now, time.time(), 0.0, self._batch_max_bytes, now, refilled=now)
        self._learn(item, verdict, now)
        log.warning("Loki throttles a stream; sending it on its own, paced",
                    extra={"stream": text, "named_by_loki": named, "reason": verdict.reason,
                           "allowed_bytes_per_s": verdict.limit_bytes_per_s or None,
                           "gives_up_after_s_without_progress": self._give_up_after})
        return item

    def _learn(self, item: Throttled, verdict: Verdict, now: float) -> None:
        """A (new) refusal: Loki's bucket is empty; take its rate if it named one."""
        if verdict.limit_bytes_per_s:
            rate = PACE * verdict.limit_bytes_per_s
            item.rate = rate if not item.rate else min(item.rate, rate)
            item.push_cap = max(MIN_PUSH_BYTES, min(self._batch_max_bytes, int(item.rate)))
        item.tokens, item.refilled = 0.0, now
        item.reason = verdict.reason

    def _segment(self, push: Push, key: StreamKey, entries: list[Entry]) -> Segment:
        origin = push.origins[key]
        return Segment(key, origin, entries, push.pieces[key], self._size(origin, entries))

    def _queue(self, item: Throttled, segment: Segment, now: float, front: bool = False) -> None:
        (item.segments.appendleft if front else item.segments.append)(segment)
        item.queued_bytes += segment.nbytes
        item.idle_since = None
        origin = segment.origin
        item.containers[origin.container_id] = origin.labels.get("container_name", "")
        self._flow(item)

    def _flow(self, item: Throttled) -> None:
        """Pause the containers that feed a label set while a push's worth of it waits here."""
        flow = self._pause if item.queued_bytes >= item.push_cap else self._resume
        for container_id in item.containers:
            flow(container_id)

    # -- pacing -------------------------------------------------------------------------------
    def next_due(self, now: float) -> tuple[Throttled | None, float]:
        """The label set to push next and how long until it may; (None, seconds until the next
        idle one is forgotten, or inf)."""
        self._forget_idle(now)
        waiting = [item for item in self.sets.values() if item.segments]
        if not waiting:
            idle = [item.idle_since for item in self.sets.values() if item.idle_since is not None]
            return None, (min(idle) + FORGET_AFTER - now) if idle else math.inf
        item = min(waiting, key=lambda it: it.ready_at(now))
        return item, max(0.0, item.ready_at(now) - now)

    def take(self, item: Throttled, now: float) -> tuple[Push, list[Segment]]:
        """The next push of this label set: one container's stream, at most push_cap bytes (at
        least one entry)."""
        first = item.segments[0]
        push = Push()
        taken: list[Segment] = []
        room = item.push_cap
        while item.segments and item.segments[0].key == first.key and room > 0:
            segment = item.segments.popleft()
            if segment.nbytes > room:
                segment, rest = self._cut(segment, room, at_least_one=not taken)
                if rest is not None:
                    item.segments.appendleft(rest)
                if segment is None:
                    break
            item.queued_bytes -= segment.nbytes
            room -= segment.nbytes
            taken.append(segment)
            push.streams.setdefault(segment.key, []).extend(segment.entries)
            push.origins[segment.key] = segment.origin
            push.pieces[segment.key] = segment.piece  # resolution goes by segment (settle), not by push
        if item.rate:
            item.tokens = min(item.push_cap, item.tokens + (now - item.refilled) * item.rate)
            item.refilled = now
            item.tokens -= sum(segment.nbytes for segment in taken)
        self._flow(item)
        return push, taken

    def _cut(self, segment: Segment, room: int, at_least_one: bool) -> tuple[Segment | None, Segment | None]:
        """The head of a segment that fits in `room` bytes (None if not even one entry fits) and
        the rest (None if nothing is left)."""
        per_entry = segment.nbytes / len(segment.entries)
        count = min(len(segment.entries), max(int(room / per_entry), 1 if at_least_one else 0))
        if count == 0:
            return None, segment
        if count == len(segment.entries):
            return segment, None
        head = Segment(segment.key, segment.origin, segment.entries[:count], segment.piece.divided(), 0)
        rest = Segment(segment.key, segment.origin, segment.entries[count:], segment.piece, 0)
        head.nbytes = self._size(head.origin, head.entries)
        rest.nbytes = segment.nbytes - head.nbytes
        return head, rest

    def settle(self, item: Throttled, taken: list[Segment], verdict: Verdict, unstored: list[Entry],
               retry_after: float | None, now: float) -> None:
        """Loki answered a paced push of `taken`; `unstored` are its entries Loki did not keep."""
        action = verdict.action
        lone = sum(len(segment.entries) for segment in taken) <= 1
        if action in (Action.STORED, Action.REJECTED):
            self._progress(item, taken, now)
            self._resolve([segment.piece for segment in taken])
            item.attempt = 0
        elif action is Action.DROP or action is Action.SPLIT and lone:
            reason = "too_large" if action is Action.SPLIT else verdict.reason
            self._drop(sum(len(s.entries) for s in taken), reason,
                       "Loki refused a throttled stream's push; its entries are dropped", list(item.containers.values()))
            item.last_progress = now
            self._resolve([segment.piece for segment in taken])
        elif action is Action.SPLIT:
            item.push_cap = max(MIN_PUSH_BYTES, item.push_cap // 2)
            self._put_back(item, taken, now)
        elif action is Action.STREAM_THROTTLED:
            still = {id(entry) for entry in unstored}
            if SHARD_LABEL in (verdict.stream or {}):
                still = {id(entry) for segment in taken for entry in segment.entries}  # a shard: which ones is unknown
            stored = [s for s in taken if not any(id(entry) in still for entry in s.entries)]
            kept = [s for s in taken if s not in stored]
            if stored or len(still) < sum(len(s.entries) for s in taken):
                self._progress(item, stored, now)
            self._resolve([segment.piece for segment in stored])
            for segment in kept:
                segment.entries = [entry for entry in segment.entries if id(entry) in still]
                segment.nbytes = self._size(segment.origin, segment.entries)
            self._put_back(item, kept, now)
            self._learn(item, verdict, now)
            item.attempt += 1
            if item.rate and item.attempt > 1:
                item.rate *= 0.8  # refused although paced: Loki allows less than it said (other writers)
                item.push_cap = max(MIN_PUSH_BYTES, min(item.push_cap, int(item.rate)))
            item.not_before = now + (0 if item.rate else self._backoff(item.attempt))
        else:  # RETRY or HOLD: Loki down or refusing everything; no throttle, the clock restarts
            item.last_progress = now
            self._put_back(item, taken, now)
            item.attempt += 1
            item.not_before = now + (min(retry_after, self._max_backoff) if retry_after is not None else self._backoff(item.attempt))
        if now - item.last_progress >= self._give_up_after and item.segments:
            self._give_up(item)
        if not item.segments:
            item.idle_since = now
        self._flow(item)

    def _progress(self, item: Throttled, segments: list[Segment], now: float) -> None:
        item.last_progress = now
        item.delivered_bytes += sum(segment.nbytes for segment in segments)
        item.delivered_entries += sum(len(segment.entries) for segment in segments)

    def _put_back(self, item: Throttled, segments: list[Segment], now: float) -> None:
        for segment in reversed(segments):
            self._queue(item, segment, now, front=True)

    def _give_up(self, item: Throttled) -> None:
        entries = sum(len(segment.entries) for segment in item.segments)
        self._drop(entries, item.reason, "a throttled stream made no progress within loki.limit_retry_max; its entries are dropped",
                   list(item.containers.values()))
        pieces = [segment.piece for segment in item.segments]
        item.segments.clear()
        item.queued_bytes = 0
        self._resolve(pieces)

    def _forget_idle(self, now: float) -> None:
        for text in [text for text, item in self.sets.items() if item.idle_since is not None and now - item.idle_since >= FORGET_AFTER]:
            item = self.sets.pop(text)
            for container_id in item.containers:
                self._resume(container_id)
            log.info("a throttled stream is no longer paced", extra={"stream": text, "delivered_entries": item.delivered_entries})

    def forget_all(self) -> None:
        """Shutdown: nothing queued is left; resume every container."""
        for item in self.sets.values():
            for container_id in item.containers:
                self._resume(container_id)
        self.sets.clear()

    def _backoff(self, attempt: int) -> float:
        return min(self._max_backoff, self._min_backoff * 2 ** min(attempt, 30))

    # -- what /status shows -----------------------------------------------------------------------
    def view(self, now: float) -> list[dict[str, Any]]:
        rows = []
        for item in self.sets.values():
            paced_for = max(now - item.since, 1e-9)
            rows.append({
                "stream": item.labels, "named_by_loki": item.named_as, "reason": item.reason,
                "containers": sorted(item.containers.values()),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item.since_wall)),
                "allowed_bytes_per_s": round(item.rate / PACE) if item.rate else None,
                "paced_bytes_per_s": round(item.rate) if item.rate else None,
                "delivered_bytes_per_s": round(item.delivered_bytes / paced_for),
                "queued_entries": sum(len(segment.entries) for segment in item.segments),
                "queued_bytes": item.queued_bytes,
            })
        return rows
