"""Tenant lanes: one queue share and one sender per tenant; their counters added up (no Docker)."""

from __future__ import annotations

import msgspec

from collector.config import Config, decode_hook
from collector.sinks.lanes import make_lanes, merged_stats
from collector.sinks.loki import LokiSink
from collector.sinks.stdout import StdoutSink


def config(**tree) -> Config:
    return msgspec.convert(tree, Config, dec_hook=decode_hook, strict=False)


def test_a_lane_per_allowed_tenant_each_with_a_share_of_the_queue() -> None:
    cfg = config(loki={"url": "http://loki:3100/loki/api/v1/push", "tenant": "base", "tenants_allowed": ["a", "b", "a"]},
                 queue={"max_bytes": "12MiB"})
    lanes = make_lanes(cfg, LokiSink(cfg.loki), lambda chunk: None, None)
    assert list(lanes) == ["", "a", "b"]
    assert [lane.queue.max_bytes for lane in lanes.values()] == [4 * 1024 * 1024] * 3
    assert [lane.sink.config.tenant for lane in lanes.values()] == ["base", "a", "b"]  # type: ignore[attr-defined]
    first, second = lanes["a"].sink.stats, lanes["b"].sink.stats  # type: ignore[attr-defined]
    first.entries_sent, second.entries_sent = 5, 7
    first.requests["204"] += 1
    second.requests["401"] += 2
    second.last_push_ok, second.last_error = False, "HTTP 401: Unauthorized"
    total = merged_stats(lanes)
    assert total is not None and total.entries_sent == 12 and total.requests == {"204": 1, "401": 2}
    assert total.last_push_ok is False and total.last_error == "HTTP 401: Unauthorized"


def test_stdout_has_one_lane_and_no_push_stats() -> None:
    cfg = config(loki={"tenants_allowed": ["a"]})
    lanes = make_lanes(cfg, StdoutSink(), lambda chunk: None, None)
    assert list(lanes) == [""] and lanes[""].queue.max_bytes == cfg.queue.max_bytes
    assert merged_stats(lanes) is None
