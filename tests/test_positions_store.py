"""PositionStore alone, no Docker: serialised checkpoint writes, a bounded memory of removed ids."""

from __future__ import annotations

import asyncio

from collector.pipeline.entry import Chunk, FilePosition, Origin
from collector.positions import GONE_REMEMBERED, PositionStore


async def test_overlapping_saves_are_serialised(tmp_path) -> None:
    store = PositionStore(str(tmp_path / "positions.json"), 1.0)
    for i in range(20000):
        store.ensure(f"{i:064d}", FilePosition(i, i))
    await asyncio.gather(*(store.save() for _ in range(5)))  # e.g. the final save while one runs
    assert (store.writes, store.write_errors) == (5, 0)


def test_destroyed_ids_are_remembered_within_a_bound() -> None:
    store = PositionStore("/nonexistent/positions.json", 1.0)
    for i in range(3 * GONE_REMEMBERED):
        store.forget(f"gone-{i}")
    assert len(store._gone) == GONE_REMEMBERED
    recent = Chunk(Origin(f"gone-{3 * GONE_REMEMBERED - 1}", {}), [], 0, FilePosition(1, 10))
    store.acknowledge([recent])  # a late ack of a just-removed container does not bring it back
    assert store.get(recent.origin.container_id) is None
