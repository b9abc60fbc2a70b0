"""Positions advance in read order per container, across the memory path and the spool.

A chunk *completes* when it is durable in the spool (fsynced) or, on the memory path, when Loki
has it. `PositionStore` keeps the last position it is given, so a container's position may move
past a chunk only once that chunk and every chunk of the container read before it completed: a
spooled chunk that is durable waits behind an older memory chunk Loki does not have yet.

Chunks read back from the spool are not tracked: their positions were advanced when they became
durable. Bounded by the chunks in the queue, the sink and the spool's write batch; a completed
chunk waiting behind an older one keeps only its position, not its entries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from collector.pipeline.entry import Chunk, Position


@dataclass(slots=True)
class _Step:
    position: Position | None
    done: bool = False


class ReadOrder:
    def __init__(self, advance: Callable[[str, Position], None]) -> None:
        self._advance = advance
        self._steps: dict[Chunk, _Step] = {}  # not yet completed
        self._order: dict[str, deque[_Step]] = {}  # container id -> its chunks in read order

    def __len__(self) -> int:
        """Chunks tracked and not yet passed by their container's position."""
        return sum(map(len, self._order.values()))

    def track(self, chunk: Chunk) -> None:
        """A chunk was read (it went into the queue or the spool)."""
        if chunk.spooled is not None:
            return
        step = self._steps[chunk] = _Step(chunk.position)
        self._order.setdefault(chunk.origin.container_id, deque()).append(step)

    def complete(self, chunks: Iterable[Chunk]) -> None:
        """These chunks are durable or delivered; advance each container past its completed prefix."""
        touched: set[str] = set()
        for chunk in chunks:
            step = self._steps.pop(chunk, None)
            if step is not None:
                step.done = True
                touched.add(chunk.origin.container_id)
        for container_id in touched:
            order = self._order[container_id]
            position = None
            while order and order[0].done:
                position = order.popleft().position or position
            if not order:
                del self._order[container_id]
            if position is not None:
                self._advance(container_id, position)
