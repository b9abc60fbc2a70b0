"""What a sink is to the supervisor: it drains the queue and acknowledges what was delivered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from collector.pipeline.entry import Chunk
from collector.pipeline.queue import ChunkQueue

Acknowledge = Callable[[list[Chunk]], None]


class Sink(Protocol):
    async def run(self, queue: ChunkQueue, acknowledge: Acknowledge) -> None:
        """Deliver chunks until the queue is closed and empty; acknowledge each delivered batch."""
