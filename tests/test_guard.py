"""The cardinality guard and labels from line fields (no Docker; a fake clock)."""

from __future__ import annotations

from collector.pipeline.entry import Entry, FilePosition, Origin
from collector.transform.guard import OTHER, StreamGuard
from collector.transform.routing import StreamLabeler


def test_never_more_active_label_sets_than_the_limit_and_the_window_frees_them() -> None:
    now = [0.0]
    guard = StreamGuard(10, window=3600, clock=lambda: now[0])
    foldable = frozenset({"container_name"})
    sent = [guard.admit("", {"container_name": f"job-{i}", "service": "job"}, foldable) for i in range(12)]
    assert [labels["container_name"] for labels in sent] == [f"job-{i}" for i in range(9)] + [OTHER] * 3
    assert guard.active("") == 10 and guard.folded == 3
    assert guard.admit("", {"container_name": "job-3", "service": "job"}, foldable)["container_name"] == "job-3"  # active
    assert guard.admit("other-tenant", {"container_name": "job-11", "service": "job"}, foldable)["container_name"] == "job-11"
    # Nothing foldable: Loki's own limit decides.
    assert guard.admit("", {"service": "web"}, foldable) == {"service": "web"}
    now[0] = 3601 + 10  # an hour without lines: those sets are no longer active
    assert guard.admit("", {"container_name": "new", "service": "job"}, foldable)["container_name"] == "new"


def test_field_labels_group_entries_and_only_the_last_chunk_moves_the_position() -> None:
    guard = StreamGuard(1000, 3600)
    labeler = StreamLabeler(guard, "", frozenset({"level"}), ("level",))
    origin = Origin("c" * 64, {"container_name": "web"})
    entries = [Entry(1, "a", "stdout", {"level": "info", "trace_id": "t1"}), Entry(2, "b", "stdout", {"level": "error"}),
               Entry(3, "c", "stdout", None), Entry(4, "d", "stdout", {"level": "info"})]
    position = FilePosition(1, 99, 0)
    chunks = labeler.chunks(origin, entries, 50, position)
    assert [(c.origin.labels, [e.line for e in c.entries]) for c in chunks] == [
        ({"container_name": "web", "level": "info"}, ["a", "d"]),
        ({"container_name": "web", "level": "error"}, ["b"]),
        ({"container_name": "web"}, ["c"]),
    ]
    assert chunks[0].entries[0].attrs == {"trace_id": "t1"}  # the label is no longer metadata too
    assert [c.nbytes for c in chunks] == [50, 0, 0] and [c.position for c in chunks] == [None, None, position]
    again = labeler.chunks(origin, [Entry(5, "e", "stdout", {"level": "info"})], 5, position)
    assert again[0].origin is chunks[0].origin  # one origin per label set: one Loki stream per batch
