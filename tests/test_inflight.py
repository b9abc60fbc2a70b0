"""The in-flight ledger behind /status's delivery lag and unacknowledged bytes (no Docker)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.pipeline.entry import Chunk, Entry, FilePosition, Origin, StreamPosition
from collector.pipeline.inflight import MAX_ENTRIES, InFlight
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

    assert len(ledger) <= MAX_ENTRIES, f"{len(ledger)} entries for {count} chunks of one container"
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


def test_after_a_long_backlog_drains_live_traffic_is_reported_exactly_again() -> None:
    """Entries grow coarse while a backlog is long; once it has drained, a busy container (always a
    chunk or two in flight, never idle long enough to empty the ledger) must get exact figures
    again, not one coarse entry that swallows every new chunk."""
    ledger = InFlight()
    origin = Origin("e" * 64, {"container_name": "steady"})
    offset = 0

    def next_chunk(ts_s: int) -> Chunk:
        nonlocal offset
        offset += 100
        return chunk(origin, ts_s, 50, offset)

    backlog = [next_chunk(1_000) for _ in range(100_000)]
    for item in backlog:
        ledger.queued(item)
    for item in backlog[:-2]:
        ledger.acknowledged([item])

    in_flight = list(backlog[-2:])
    for step in range(300):  # one new chunk read, the oldest one in flight delivered
        fresh = next_chunk(2_000 + step)
        ledger.queued(fresh)
        in_flight.append(fresh)
        ledger.acknowledged([in_flight.pop(0)])
    assert ledger.unacknowledged_bytes(origin.container_id) == 50 * len(in_flight)
    assert ledger.delivery_lag(origin.container_id, 2_400 * SECOND) == 2_400 - (2_000 + 298)
    assert len(ledger) == len(in_flight)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), min_size=1, max_size=12))
def test_reported_bytes_and_lag_are_never_below_the_truth(rounds: list[tuple[int, int]]) -> None:
    """Any pattern of reads and in-order acknowledgements: the ledger may over-report (merged
    entries), never under-report, and is empty once everything is acknowledged."""
    ledger = InFlight()
    origin = Origin("f" * 64, {"container_name": "any"})
    in_flight: list[Chunk] = []
    offset = 0
    for read, delivered in rounds:
        for _ in range(read):
            offset += 10
            item = chunk(origin, offset, 7, offset)
            ledger.queued(item)
            in_flight.append(item)
        for _ in range(min(delivered, len(in_flight))):
            ledger.acknowledged([in_flight.pop(0)])
        assert ledger.unacknowledged_bytes(origin.container_id) >= 7 * len(in_flight)
        now = (offset + 1) * SECOND
        true_lag = (now - in_flight[0].entries[0].ts_ns) / 1e9 if in_flight else 0.0
        assert ledger.delivery_lag(origin.container_id, now) >= true_lag
        assert len(ledger) <= MAX_ENTRIES
    ledger.acknowledged(in_flight[-1:])
    assert len(ledger) == 0 and ledger.containers() == {}
