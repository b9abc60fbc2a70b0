"""Tables keyed by container, stream or label set return to their baseline (or stay under their
bound) after 10,000 containers came and went. Plain objects, no Docker; the inotify hub's churn
test is in test_inotify_tables.py."""

from __future__ import annotations

from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin
from collector.pipeline.inflight import InFlight
from collector.positions import GONE_REMEMBERED, PositionStore
from collector.transform.guard import StreamGuard
from collector.transform.routing import StreamLabeler

CHURN = 10_000


def chunk(container_id: str, offset: int) -> Chunk:
    origin = Origin(container_id, {"container_name": f"name-{container_id}"})
    return Chunk(origin, [Entry(1, "line", "stdout")], 5, FilePosition(1, offset))


def test_positions_forget_destroyed_containers_and_remember_a_bounded_few(tmp_path) -> None:
    store = PositionStore(str(tmp_path / "positions.json"), 1.0)
    store.ensure("kept", FilePosition(1, 0))
    baseline = store.table_sizes()
    for index in range(CHURN):
        container_id = f"c{index}"
        store.ensure(container_id, FilePosition(index, 0))
        store.acknowledge([chunk(container_id, 10)])
        store.forget(container_id)  # destroy
        store.acknowledge([chunk(container_id, 20)])  # a late acknowledgement does not bring it back
    sizes = store.table_sizes()
    assert sizes["positions"] == baseline["positions"] == 1
    assert sizes["gone"] == GONE_REMEMBERED, "destroyed ids remembered: the last few only"


def test_inflight_drops_a_container_once_its_chunks_are_acknowledged() -> None:
    inflight = InFlight()
    for index in range(CHURN):
        sent = [chunk(f"c{index}", offset) for offset in (10, 20, 30)]
        for item in sent:
            inflight.queued(item)
        inflight.acknowledged(sent[-1:])  # the last acknowledgement covers the older ones
    assert inflight.containers() == {}


def test_stream_guard_forgets_label_sets_of_gone_containers_after_its_window() -> None:
    now = [0.0]
    guard = StreamGuard(max_streams=100, window=3600.0, clock=lambda: now[0])
    for index in range(CHURN):  # each container its own stream, nothing foldable: Loki's limit decides
        guard.admit("", {"container_name": f"c{index}"}, frozenset())
        now[0] += 0.1
    during = guard.active("")
    assert during <= CHURN
    now[0] += 3601.0  # every one of them idle for longer than the window
    guard.admit("", {"container_name": "new"}, frozenset())
    assert guard.active("") == 1, f"{during} label sets during the churn, back to 1 after the window"


def test_stream_labeler_origins_stay_bounded_under_field_label_churn() -> None:
    guard = StreamGuard(max_streams=0, window=3600.0)
    labeler = StreamLabeler(guard, "", frozenset(), ("level",))
    origin = Origin("c", {"container_name": "web"})
    for index in range(CHURN):
        entry = Entry(index, "line", "stdout", {"level": f"v{index}"})
        labeler.chunks(origin, [entry], 5, None)
    assert labeler.origin_count() <= 257
