"""What each container has queued and the sink has not yet acknowledged: /status's delivery lag
(age of the oldest unacknowledged line) and bytes read but not acknowledged.

Fed by the queue (every chunk on its way in) and the sink's acknowledgements, which come in read
order per container; a chunk is matched by its resume position, which only moves forward. It
outlives the registry's view of a container: a removed container's lines still in flight show
as destroyed-draining until the sink has delivered them.

Bounded per container: a spooled backlog keeps every chunk read since an outage began in flight.
Beyond MAX_ENTRIES, neighbouring entries merge in pairs (the later position, the earlier line,
both sizes) and each new entry then takes twice as many chunks, so all entries span about as
many chunks; once fewer than a quarter of MAX_ENTRIES are held, new entries get finer again. An
acknowledgement of a position merged away settles nothing until the next kept one: bytes and lag
may be over-reported by one entry's worth, never under-reported."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from collector.pipeline.entry import Chunk, Position

MAX_ENTRIES = 128  # per container


class _Queued(NamedTuple):
    """One chunk, or neighbouring chunks merged."""

    first_ts_ns: int  # Docker's timestamp of the first line; 0 when it has none
    nbytes: int
    position: Position | None  # the last chunk's
    count: int = 1  # chunks


def _merged(older: _Queued, newer: _Queued) -> _Queued:
    return _Queued(older.first_ts_ns or newer.first_ts_ns, older.nbytes + newer.nbytes,
                   newer.position or older.position, older.count + newer.count)


def _merged_in_pairs(entries: deque[_Queued]) -> deque[_Queued]:
    merged = deque(_merged(entries[index], entries[index + 1]) for index in range(0, len(entries) - 1, 2))
    if len(entries) % 2:
        merged.append(entries[-1])
    return merged


@dataclass(slots=True)
class _Pending:
    name: str
    chunks: deque[_Queued] = field(default_factory=deque)
    stride: int = 1  # chunks per entry


class InFlight:
    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        """Entries held, over all containers."""
        return sum(len(pending.chunks) for pending in self._pending.values())

    def queued(self, chunk: Chunk) -> None:
        origin = chunk.origin
        pending = self._pending.get(origin.container_id)
        if pending is None:
            pending = self._pending[origin.container_id] = _Pending(origin.labels.get("container_name", ""))
        first_ts = chunk.entries[0].ts_ns if chunk.entries else 0
        entry = _Queued(first_ts, chunk.nbytes, chunk.position)
        if pending.stride > 1 and len(pending.chunks) < MAX_ENTRIES // 4:
            pending.stride //= 2  # the backlog has drained: new entries get finer again
        if pending.chunks and pending.chunks[-1].count < pending.stride:
            pending.chunks[-1] = _merged(pending.chunks[-1], entry)
        else:
            pending.chunks.append(entry)
        if len(pending.chunks) > MAX_ENTRIES:
            pending.chunks = _merged_in_pairs(pending.chunks)
            pending.stride *= 2

    def acknowledged(self, chunks: Iterable[Chunk]) -> None:
        for chunk in chunks:
            container_id = chunk.origin.container_id
            pending = self._pending.get(container_id)
            if pending is None or chunk.position is None or all(q.position != chunk.position for q in pending.chunks):
                continue
            while pending.chunks.popleft().position != chunk.position:
                pass  # older chunks: acknowledgements come in read order, so they are done too
            if not pending.chunks:
                del self._pending[container_id]

    def containers(self) -> dict[str, str]:
        """Id -> name of every container with lines in flight."""
        return {container_id: pending.name for container_id, pending in self._pending.items()}

    def unacknowledged_bytes(self, container_id: str) -> int:
        pending = self._pending.get(container_id)
        return sum(q.nbytes for q in pending.chunks) if pending else 0

    def delivery_lag(self, container_id: str, now_ns: int) -> float:
        """Seconds since Docker logged the oldest line not yet acknowledged; 0 when none is waiting."""
        pending = self._pending.get(container_id)
        for queued in pending.chunks if pending else ():
            if queued.first_ts_ns:
                return max(0.0, (now_ns - queued.first_ts_ns) / 1e9)
        return 0.0
