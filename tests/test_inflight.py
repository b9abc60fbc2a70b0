"""The in-flight ledger behind /status's delivery lag and unacknowledged bytes (no Docker)."""

from __future__ import annotations

from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin, StreamPosition
from collector.pipeline.inflight import InFlight
from collector.pipeline.queue import ChunkQueue
from collector.startup_report import masked_url, routes_facts

SECOND = 1_000_000_000


def chunk(origin: Origin, first_ts_s: int, nbytes: int, offset: int) -> Chunk:
    return Chunk(origin, [Entry(first_ts_s * SECOND, "x", "stdout")], nbytes, FilePosition(7, offset))


async def test_the_queue_feeds_the_ledger_and_acknowledgements_settle_it_in_read_order() -> None:
    ledger = InFlight()
    queue = ChunkQueue(1 << 20, on_put=ledger.queued)
    web, db = Origin("a" * 64, {"container_name": "web"}), Origin("b" * 64, {"container_name": "db"})
    first, second, third = chunk(web, 100, 10, 10), chunk(web, 105, 20, 30), chunk(web, 110, 30, 60)
    for item in (first, second, chunk(db, 50, 5, 5), third):
        await queue.put(item)

    assert ledger.unacknowledged_bytes(web.container_id) == 60
    assert ledger.delivery_lag(web.container_id, 120 * SECOND) == 20.0  # the oldest line waits
    assert ledger.containers() == {web.container_id: "web", db.container_id: "db"}

    ledger.acknowledged([second])  # acknowledges the first one too: they come in read order
    assert ledger.unacknowledged_bytes(web.container_id) == 30
    assert ledger.delivery_lag(web.container_id, 120 * SECOND) == 10.0

    # A chunk the ledger never saw (e.g. one the sink rebuilt) settles nothing.
    ledger.acknowledged([Chunk(web, [], 1, FilePosition(7, 999))])
    assert ledger.unacknowledged_bytes(web.container_id) == 30

    ledger.acknowledged([third])
    assert ledger.unacknowledged_bytes(web.container_id) == 0
    assert ledger.delivery_lag(web.container_id, 120 * SECOND) == 0.0
    assert web.container_id not in ledger.containers()  # nothing left per container once settled
    assert ledger.delivery_lag(db.container_id, 60 * SECOND) == 10.0


def test_stream_positions_and_chunks_without_lines() -> None:
    ledger = InFlight()
    origin = Origin("c" * 64, {"container_name": "api"})
    empty = Chunk(origin, [], 3, StreamPosition(5 * SECOND, 1))  # skipped records still move the position
    lines = Chunk(origin, [Entry(7 * SECOND, "y", "stderr")], 4, StreamPosition(7 * SECOND, 1))
    ledger.queued(empty)
    ledger.queued(lines)
    assert ledger.delivery_lag(origin.container_id, 9 * SECOND) == 2.0  # from the oldest line, not the empty chunk
    ledger.acknowledged([empty])
    assert ledger.unacknowledged_bytes(origin.container_id) == 4


def test_startup_report_masks_passwords_and_lists_routes() -> None:
    assert masked_url("https://u:s3cret@loki.example:3100/loki/api/v1/push") == "https://u:***@loki.example:3100/loki/api/v1/push"
    assert masked_url("http://loki:3100/loki/api/v1/push") == "http://loki:3100/loki/api/v1/push"
    facts = routes_facts([("web", "file", ""), ("db", "stream", "fallback: file_not_found"), ("off", "skipped", "driver_none")])
    assert facts["containers"] == 3
    assert facts["by_mode"] == {"file": 1, "skipped": 1, "stream": 1}
    assert facts["read_as"] == ["db: stream (fallback: file_not_found)", "off: skipped (driver_none)", "web: file"]
    many = routes_facts([(f"c{i:03}", "file", "") for i in range(60)])
    assert len(many["read_as"]) == 51 and many["read_as"][-1].startswith("... and 10 more")


def test_a_long_spooled_backlog_keeps_the_ledger_small_and_its_figures_honest() -> None:
    """A Loki outage with the spool on leaves every chunk read since in flight: the ledger may not
    hold one entry per chunk (memory grew with the outage), yet what it reports stays usable:
    the bytes are exact while nothing is acknowledged, never under-reported after, and the lag
    comes from the oldest line."""
    ledger = InFlight()
    origin = Origin("d" * 64, {"container_name": "busy"})
    count = 100_000
    sent = [chunk(origin, 1_000 + index // 100, 50, 100 * (index + 1)) for index in range(count)]
    for item in sent:
        ledger.queued(item)

    assert len(ledger) <= 256, f"{len(ledger)} entries for {count} chunks of one container"
    assert ledger.unacknowledged_bytes(origin.container_id) == 50 * count
    assert ledger.delivery_lag(origin.container_id, 3_000 * SECOND) == 2_000.0

    for done in range(1, count + 1):  # acknowledged one by one, in read order
        ledger.acknowledged([sent[done - 1]])
        if done % 997 == 0:
            true_left = 50 * (count - done)
            reported = ledger.unacknowledged_bytes(origin.container_id)
            assert true_left <= reported <= true_left + 50 * count // 64
            oldest_line_s = 1_000 + done // 100
            assert 0 <= ledger.delivery_lag(origin.container_id, 3_000 * SECOND) - (3_000 - oldest_line_s) <= count // 100 // 64 + 1
    assert ledger.containers() == {} and len(ledger) == 0
