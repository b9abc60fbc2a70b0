"""A failure of the collector's own machinery (here: the sink) ends the run with its error, and
the final checkpoint written on the way out holds every position acknowledged before it.

In-process, no Docker: the engine's socket does not exist (discovery only retries), the sink is a
scripted fake.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from collector.app import Collector
from collector.config import load_config
from collector.pipeline.entry import Chunk, FilePosition, Origin
from collector.pipeline.queue import ChunkQueue
from collector.sinks.base import Acknowledge

CID = "a" * 64


class SinkThatBreaks:
    """Acknowledges two chunks, a moment apart, then fails as a broken sink would."""

    async def run(self, queue: ChunkQueue, acknowledge: Acknowledge) -> None:
        # As a source would: read into the queue (which tracks read order), then the sink takes them.
        origin = Origin(CID, {})
        for offset in (100, 250):
            queue.put_nowait(Chunk(origin, [], 0, FilePosition(7, offset)))
        acknowledge([await queue.get()])
        await asyncio.sleep(0.2)  # the positions writer saved the first; it waits out its interval now
        acknowledge([await queue.get()])
        raise RuntimeError("sink machinery broke")


async def test_machinery_failure_writes_the_acknowledged_positions_and_reraises(tmp_path) -> None:
    positions = tmp_path / "positions.json"
    config = load_config(None, {
        "COLLECTOR_DOCKER__HOST": f"unix://{tmp_path}/no-docker.sock",
        "COLLECTOR_DOCKER__CONTAINERS_DIR": str(tmp_path / "containers"),
        "COLLECTOR_POSITIONS__PATH": str(positions),
        "COLLECTOR_POSITIONS__SYNC_INTERVAL": "1h",  # the writer saves the first ack only: the final checkpoint has the second
        "COLLECTOR_METRICS__LISTEN": "",
    })
    collector = Collector(config, sink=SinkThatBreaks())
    with pytest.raises(ExceptionGroup) as raised:
        await asyncio.wait_for(collector.run(asyncio.Event()), 20)
    assert raised.group_contains(RuntimeError, match="sink machinery broke")
    saved = json.loads(positions.read_text())["containers"][CID]
    assert saved["offset"] == 250 and saved["inode"] == 7, saved
