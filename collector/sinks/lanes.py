"""One lane per Loki tenant: its own queue (a share of `queue.max_bytes`) and its own sender.

A request carries one X-Scope-OrgID, and a tenant whose pushes fail (401, 429, an outage of its
own) must not hold back the others: its sources wait on its own full queue while every other
lane keeps flowing. The default lane ("") sends as `loki.tenant`; one more lane per tenant in
`loki.tenants_allowed`, all made at startup (the allowlist is the bound)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import msgspec

from collector.config import Config
from collector.pipeline.entry import Chunk
from collector.pipeline.queue import ChunkQueue, Overflow
from collector.sinks.base import Sink
from collector.sinks.loki import LokiSink, PushObserver, PushStats

MIN_LANE_BYTES = 1024 * 1024


@dataclass(slots=True)
class Lane:
    tenant: str  # "" for the default lane
    queue: ChunkQueue
    sink: Sink


def make_lanes(config: Config, default_sink: Sink, on_put: Callable[[Chunk], None],
               observer: PushObserver | None,
               spool_for: Callable[[str, int], Overflow | None] = lambda tenant, lanes: None) -> dict[str, Lane]:
    """`spool_for(tenant, number of lanes)`: the lane's spool (each lane has its share), or None."""
    tenants = [tenant for tenant in dict.fromkeys(config.loki.tenants_allowed) if tenant]
    if not isinstance(default_sink, LokiSink):
        tenants = []  # stdout: one lane; the tenant is a Loki notion
    share = max(MIN_LANE_BYTES, config.queue.max_bytes // (1 + len(tenants)))
    count = 1 + len(tenants)
    read_ahead = 2 * config.loki.batch_max_bytes  # the batch being filled and the next one
    lanes = {"": Lane("", ChunkQueue(share if tenants else config.queue.max_bytes, on_put=on_put, spool=spool_for("", count),
                                     read_ahead=read_ahead), default_sink)}
    for tenant in tenants:
        lanes[tenant] = Lane(tenant, ChunkQueue(share, on_put=on_put, spool=spool_for(tenant, count), read_ahead=read_ahead),
                             LokiSink(msgspec.structs.replace(config.loki, tenant=tenant), observer))
    return lanes


def merged_stats(lanes: dict[str, Lane]) -> PushStats | None:
    """Every Loki lane's counters added up (what /metrics reports); None without a Loki sink."""
    stats = [lane.sink.stats for lane in lanes.values() if isinstance(lane.sink, LokiSink)]
    if not stats:
        return None
    if len(stats) == 1:
        return stats[0]
    total = PushStats()
    for part in stats:
        for item in fields(PushStats):
            mine, theirs = getattr(total, item.name), getattr(part, item.name)
            if isinstance(theirs, bool | str):
                continue
            if isinstance(theirs, int):
                setattr(total, item.name, mine + theirs)
            else:
                mine.update(theirs)
    failing = [part for part in stats if not part.last_push_ok]
    total.last_push_ok = not failing
    total.last_error = failing[0].last_error if failing else ""
    return total
