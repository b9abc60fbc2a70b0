"""Which chunks Loki has stored, acknowledged per container in read order.

A chunk counts as delivered when every piece holding its entries is resolved (stored, or counted
as dropped). `PositionStore.acknowledge` keeps the last position it is given, so a container's
chunks are acknowledged strictly in the order they were read: a chunk that is done waits behind
an older one of its container that is not (a stream Loki throttles), never the other way round.
Chunks of other containers are not held up by it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from collector.pipeline.entry import Chunk
from collector.sinks.base import Acknowledge
from collector.sinks.batch import Piece


class AckLedger:
    def __init__(self, acknowledge: Acknowledge) -> None:
        self._acknowledge = acknowledge
        self._open: dict[Chunk, int] = {}  # chunk -> pieces of it not yet resolved
        self._order: dict[str, deque[Chunk]] = {}  # container id -> its chunks in read order

    def __len__(self) -> int:
        """Chunks taken from the queue and not yet acknowledged."""
        return len(self._open)

    @property
    def containers(self) -> int:
        return len(self._order)

    def unacknowledged(self) -> list[Chunk]:
        """Chunks not yet delivered, in read order per container."""
        return [chunk for order in self._order.values() for chunk in order if self._open[chunk]]

    def track(self, chunk: Chunk, pieces: int) -> None:
        """A chunk joined a batch, its entries spread over `pieces` pieces."""
        self._open[chunk] = pieces
        container_id = chunk.origin.container_id
        order = self._order.get(container_id)
        if order is None:
            order = self._order[container_id] = deque()
        order.append(chunk)
        if pieces == 0 and len(order) == 1:
            self._flush_containers({container_id})

    def resolve(self, pieces: Iterable[Piece]) -> None:
        """Each of these pieces had one of its parts stored or counted as dropped."""
        touched: set[str] = set()
        for piece in pieces:
            piece.parts -= 1
            if piece.parts:
                continue
            for chunk in piece.chunks:
                left = self._open[chunk] - 1
                self._open[chunk] = left
                if not left:
                    chunk.entries = []  # delivered: while it waits for an older chunk, only its position counts
                    touched.add(chunk.origin.container_id)
        if touched:
            self._flush_containers(touched)

    def _flush_containers(self, container_ids: set[str]) -> None:
        done: list[Chunk] = []
        for container_id in container_ids:
            order = self._order[container_id]
            while order and not self._open[order[0]]:
                chunk = order.popleft()
                del self._open[chunk]
                done.append(chunk)
            if not order:
                del self._order[container_id]
        if done:
            self._acknowledge(done)
