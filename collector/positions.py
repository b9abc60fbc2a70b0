"""Resume points per container, advanced only by acknowledged chunks."""

from __future__ import annotations

from collections.abc import Iterable

from collector.pipeline.entry import Chunk, FilePosition


class Positions:
    def __init__(self) -> None:
        self._acked: dict[str, FilePosition] = {}

    def get(self, container_id: str) -> FilePosition | None:
        return self._acked.get(container_id)

    def acknowledge(self, chunks: Iterable[Chunk]) -> None:
        # Chunks of one container reach the sink in read order, so the last one wins.
        for chunk in chunks:
            if chunk.position is not None:
                self._acked[chunk.origin.container_id] = chunk.position

    def forget(self, container_id: str) -> None:
        self._acked.pop(container_id, None)

    def snapshot(self) -> dict[str, FilePosition]:
        return dict(self._acked)
