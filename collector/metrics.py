"""What an operator sees: /metrics (Prometheus), /healthz, /ready, /status, on one aiohttp server.

Counters and gauges are read from the pipeline's own state at scrape time (a custom collector),
so a destroyed container's series are gone at the next scrape and nothing is counted twice.
Only the distributions (batch sizes, push durations, lag) are prometheus-client histograms,
fed by the sink.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from collector.config import ConfigError
from collector.docker.discovery import Discovery
from collector.docker.logstream import LogStreamClient
from collector.positions import PositionStore
from collector.sinks.lanes import Lane
from collector.sinks.loki import PushStats
from collector.sources.files import InotifyHub
from collector.sources.registry import SourceRegistry
from collector.spool.lane import LaneSpool

log = logging.getLogger(__name__)
disable_created_metrics()  # *_created series only add noise here

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
HEALTH_DEADLINE = 5.0  # /healthz fails when the loop's heartbeat is older than this
LAG_PROBE_INTERVAL = 0.1  # how often the loop's lateness is measured (10 wakes a second: nothing at idle)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE_SIZE


class SinkMetrics:
    """Histograms the sink feeds after each acknowledged push."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_entries = Histogram(
            "collector_batch_entries", "Entries per pushed batch.",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000), registry=registry,
        )
        self.batch_bytes = Histogram(
            "collector_batch_bytes", "Line bytes per pushed batch.",
            buckets=(1024, 16384, 65536, 262144, 524288, 1048576, 2097152, 4194304), registry=registry,
        )
        self.push_duration = Histogram(
            "collector_push_duration_seconds", "Duration of one push request, retries excluded.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=registry,
        )
        self.lag = Histogram(
            "collector_end_to_end_lag_seconds",
            "Push acknowledged time minus the entry's Docker timestamp (newest entry of each chunk).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600), registry=registry,
        )

        self.loop_lag = Histogram(
            "collector_event_loop_lag_seconds",
            "How late the event loop woke a sleeper (a 100 ms sleep), i.e. how long something blocked the loop.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry,
        )

    def pushed(self, entries: int, line_bytes: int, duration: float, entry_times_ns: list[int]) -> None:
        self.batch_entries.observe(entries)
        self.batch_bytes.observe(line_bytes)
        self.push_duration.observe(duration)
        now = time.time()
        for ts_ns in entry_times_ns:
            self.lag.observe(max(0.0, now - ts_ns / 1e9))


def spool_metrics(spools: Iterable[LaneSpool]) -> Iterator[Metric]:
    """Every lane's spool added up."""
    spools = list(spools)
    now_ns = time.time_ns()
    yield GaugeMetricFamily("collector_spool_bytes", "Bytes in the spools (on disk and being written).", value=sum(s.bytes for s in spools))
    yield GaugeMetricFamily("collector_spool_max_bytes", "The spools' bound (spool.max_bytes).", value=sum(s.settings.max_bytes for s in spools))
    yield GaugeMetricFamily("collector_spool_segments", "Segment files in the spools.", value=sum(s.segments for s in spools))
    yield GaugeMetricFamily("collector_spool_oldest_age_seconds", "Age of the oldest spool segment not yet delivered.",
                            value=max((s.oldest_age(now_ns) for s in spools), default=0.0))
    for name, field, doc in (
        ("writes", "writes", "Chunks made durable in a spool."),
        ("reads", "reads", "Chunks read back from a spool."),
        ("corrupt_records", "corrupt_records", "Spool records (or whole segments) that failed their check and were skipped."),
        ("skipped_bytes", "skipped_bytes", "Spool bytes skipped as corrupt."),
        ("torn_records", "torn_records", "Incomplete last records found after a crash (never durable, never acknowledged)."),
        ("write_errors", "write_errors", "Spool writes that failed (disk full, unwritable directory); the spool is retried."),
        ("forwarded_bytes", "forwarded_bytes", "Spool bytes read back for a container whose stream the sink holds (throttled) and "
                                               "moved to its own segments, so the others' are neither held back nor pinned."),
    ):
        yield CounterMetricFamily(f"collector_spool_{name}", doc, value=sum(getattr(s.stats, field) for s in spools))


def _by_label(family: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, doc: str, label: str, counts: Mapping[str, int]) -> Metric:
    metric = family(name, doc, labels=[label])
    for key, count in counts.items():
        metric.add_metric([key], count)
    return metric


class Pipeline(Protocol):
    """What /metrics, /ready and /status read: each part's own state (the supervisor provides it)."""

    registry: SourceRegistry
    lanes: dict[str, Lane]  # one queue and sender per tenant
    positions: PositionStore
    hub: InotifyHub
    streams: LogStreamClient
    discovery: Discovery
    spools: dict[str, LaneSpool]  # by tenant; empty when spool.enabled is false

    def push_stats(self) -> PushStats | None: ...
    def not_ready(self) -> list[str]: ...
    def status(self) -> dict[str, Any]: ...


class _StateCollector:
    """Reads counters and gauges off the running pipeline at each scrape."""

    def __init__(self, app: Pipeline) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        registry = app.registry
        lines = CounterMetricFamily("collector_lines_read", "Lines read, by source kind and container.", labels=["source", "container_name"])
        read_bytes = CounterMetricFamily("collector_bytes_read", "Log bytes read, by source kind and container.", labels=["source", "container_name"])
        errors = CounterMetricFamily("collector_source_errors", "Bad records, torn records, open and read errors, by container.", labels=["container_name"])
        truncated = CounterMetricFamily("collector_lines_truncated", "Lines cut to sources.max_line_bytes, by container.", labels=["container_name"])
        rotations = CounterMetricFamily("collector_file_rotations", "Log file rotations followed, by container.", labels=["container_name"])
        modes: dict[str, int] = {"file": 0, "stream": 0, "skipped": 0, "stopped": 0, "failed": 0}
        for tracked in registry.containers.values():
            modes[tracked.mode] = modes.get(tracked.mode, 0) + 1
            stats = tracked.stats
            name = tracked.info.name
            kind = tracked.source.kind if tracked.source is not None else (tracked.read_as or tracked.mode)
            lines.add_metric([kind, name], stats.lines)
            read_bytes.add_metric([kind, name], stats.bytes)
            errors.add_metric([name], stats.errors)
            truncated.add_metric([name], stats.truncated)
            rotations.add_metric([name], stats.rotations)
        yield from (lines, read_bytes, errors, truncated, rotations)

        yield _by_label(GaugeMetricFamily, "collector_sources", "Containers by how they are read.", "mode", modes)
        yield _by_label(CounterMetricFamily, "collector_containers_skipped", "Containers not read, by reason.", "reason", registry.skipped)
        yield _by_label(CounterMetricFamily, "collector_fallbacks", "json-file containers read through the API stream instead, by reason.",
                        "reason", registry.fallbacks)
        yield _by_label(CounterMetricFamily, "collector_source_faults",
                        "Unexpected failures of one container's setup or source, by stage:exception (each kept to its container).",
                        "reason", registry.faults)
        yield CounterMetricFamily("collector_labels_trimmed", "Labels cut or dropped to stay within Loki's limits.",
                                  value=registry.labels_trimmed)
        processing = registry.processing
        yield CounterMetricFamily("collector_streams_folded", "New label sets whose foldable labels became _other (cardinality guard).",
                                  value=registry.streams_folded)
        yield _by_label(CounterMetricFamily, "collector_lines_dropped", "Lines dropped by a drop or keep rule, by rule.", "rule",
                        processing.dropped)
        yield CounterMetricFamily("collector_lines_rate_limited", "Lines dropped by a container's rate limit.",
                                  value=processing.rate_limited_lines)
        yield CounterMetricFamily("collector_line_timestamp_fallbacks", "Lines whose own timestamp did not parse (Docker's time kept).",
                                  value=processing.timestamp_fallbacks)
        yield CounterMetricFamily("collector_label_problems", "A container's collector.* processing labels ignored as invalid "
                                  "(e.g. a regex RE2 cannot compile), counted each time a source is set up.", value=processing.problems)
        totals = registry.totals()
        yield CounterMetricFamily("collector_stream_reconnects", "API log streams ended and reopened from their position.", value=totals.reconnects)
        yield CounterMetricFamily("collector_stream_gaps", "Times Docker no longer had the records after a stream's saved position.", value=totals.gaps)
        yield _by_label(CounterMetricFamily, "collector_source_losses",
                        "Reads that ended with log data left unread or unreadable, by reason (each is logged).", "reason", totals.losses)
        yield CounterMetricFamily("collector_rotated_files_lost", "Rotated json-file logs Docker deleted before they were read (each is logged).",
                                  value=totals.files_lost)
        yield _by_label(CounterMetricFamily, "collector_lost_bytes", "Log bytes known to be lost, by reason.", "reason", registry.lost_bytes)
        yield GaugeMetricFamily("collector_log_streams_open", "API log stream connections held (in use or idle).", value=app.streams.open_connections)

        push = app.push_stats()
        if push is not None:
            yield CounterMetricFamily("collector_entries_pushed", "Entries Loki stored.", value=push.entries_sent)
            yield CounterMetricFamily("collector_bytes_pushed", "Request body bytes Loki stored.", value=push.bytes_sent)
            yield _by_label(CounterMetricFamily, "collector_push_requests", "Push requests by HTTP status (error: no answer).", "status", push.requests)
            yield CounterMetricFamily("collector_push_retries", "Push attempts retried.", value=push.retries)
            yield _by_label(CounterMetricFamily, "collector_entries_rejected", "Entries Loki rejected with a 400, by its reason.", "reason", push.rejected)
            yield _by_label(CounterMetricFamily, "collector_entries_dropped", "Entries dropped, by reason.", "reason", push.dropped)
            yield _by_label(CounterMetricFamily, "collector_entries_throttled", "Entries Loki did not store because their stream was throttled, set aside to be resent.",
                            "reason", push.throttled)
            yield GaugeMetricFamily("collector_streams_throttled", "Label sets Loki throttles now, sent on their own at the rate it allows.",
                                    value=push.streams_throttled)

        lanes = app.lanes.values()
        yield GaugeMetricFamily("collector_queue_bytes", "Bytes waiting in the queues between sources and sink (every tenant's).",
                                value=sum(lane.queue.nbytes for lane in lanes))
        yield GaugeMetricFamily("collector_queue_max_bytes", "The queues' bound (every tenant's share added up).",
                                value=sum(lane.queue.max_bytes for lane in lanes))

        yield from spool_metrics(app.spools.values())

        positions = app.positions
        yield GaugeMetricFamily("collector_position_checkpoint_age_seconds", "Seconds since positions were last written.", value=positions.checkpoint_age())
        yield CounterMetricFamily("collector_position_writes", "Position checkpoints written.", value=positions.writes)
        yield CounterMetricFamily("collector_position_write_errors", "Position checkpoints that failed.", value=positions.write_errors)

        yield GaugeMetricFamily("collector_inotify_watches", "inotify watches held (one per container directory).", value=app.hub.watch_count)
        yield GaugeMetricFamily("collector_docker_connected", "1 while the Docker event stream is followed.", value=int(app.discovery.connected))
        yield CounterMetricFamily("collector_docker_reconnects", "Times the Docker connection was lost and retried.", value=app.discovery.reconnects)
        yield _by_label(CounterMetricFamily, "collector_docker_events_skipped", "Docker events skipped unread (too_large: over the "
                        "events line limit; bad_json), each logged and followed by a re-list.", "reason", app.discovery.events_skipped)

        # Leak gauges: flat under container churn, or something leaks.
        yield GaugeMetricFamily("collector_asyncio_tasks", "asyncio tasks alive.", value=len(asyncio.all_tasks()))
        yield GaugeMetricFamily("collector_open_fds", "File descriptors open in the process.", value=open_fds())
        yield GaugeMetricFamily("collector_rss_bytes", "Resident memory of the process.", value=rss_bytes())


class Observability:
    def __init__(self, app: Pipeline) -> None:
        self.app = app
        self.registry = CollectorRegistry()
        self.sink_metrics = SinkMetrics(self.registry)
        self.registry.register(_StateCollector(app))  # type: ignore[arg-type]
        self.heartbeat = time.monotonic()
        self.port: int | None = None
        self._runner: web.AppRunner | None = None  # bound by start()

    async def start(self, listen: str) -> None:
        """Bind now, before any task runs: a busy port ends the startup with a clear error (exit 2)."""
        host, _, port = listen.rpartition(":")
        web_app = web.Application()
        web_app.add_routes([
            web.get("/metrics", self._metrics),
            web.get("/healthz", self._healthz),
            web.get("/ready", self._ready),
            web.get("/status", self._status),
        ])
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host or "0.0.0.0", int(port))
            await site.start()
        except OSError as err:
            await runner.cleanup()
            why = "address in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
            raise ConfigError(f"config error: metrics.listen = {listen!r}: cannot listen: {why}") from None
        self._runner = runner
        addresses = runner.addresses  # the bound port, when `listen` asked for port 0
        self.port = int(addresses[0][1]) if addresses else int(port)
        log.info("metrics listening", extra={"host": host, "port": self.port})

    async def run(self, listen: str) -> None:
        """Serve until cancelled; a heartbeat task proves the loop turns."""
        if self._runner is None:
            await self.start(listen)
        assert self._runner is not None
        try:
            while True:
                before = time.monotonic()
                self.heartbeat = before
                await asyncio.sleep(LAG_PROBE_INTERVAL)
                self.sink_metrics.loop_lag.observe(max(0.0, time.monotonic() - before - LAG_PROBE_INTERVAL))
        finally:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        age = time.monotonic() - self.heartbeat
        ok = age < HEALTH_DEADLINE
        return web.json_response({"status": "ok" if ok else "stalled", "heartbeat_age_s": round(age, 3)}, status=200 if ok else 503)

    async def _ready(self, request: web.Request) -> web.Response:
        problems = self.app.not_ready()
        return web.json_response({"ready": not problems, "problems": problems}, status=503 if problems else 200)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.app.status())


def status_rows(status: dict[str, Any]) -> list[list[str]]:
    """The `collector status` table, from /status JSON."""
    rows = [["CONTAINER", "ID", "STATE", "MODE", "UNACKED", "LAG", "LINES", "LAST ERROR"]]
    for c in status["containers"]:
        mode = c["mode"] + (f" ({c['reason']})" if c.get("reason") else "")
        lag = f"{c['delivery_lag_seconds']:.1f}s" if c.get("unacked_bytes") else "-"
        rows.append([c["name"], c["id"][:12], c["state"], mode, f"{c.get('unacked_bytes', 0)}B", lag, str(c["lines"]),
                     c.get("last_error") or ""])
    return rows


def throttled_rows(status: dict[str, Any]) -> list[list[str]]:
    """The `collector status` table of streams Loki throttles (none: no table)."""
    rows = [["THROTTLED STREAM", "CONTAINERS", "SINCE", "LOKI ALLOWS", "DELIVERED", "QUEUED"]]
    for t in status.get("throttled_streams", []):
        allows = f"{t['allowed_bytes_per_s'] / 1024:.0f} KB/s" if t.get("allowed_bytes_per_s") else t["reason"]
        rows.append([t["stream"], ",".join(t["containers"]), t["since"], allows,
                     f"{t['delivered_bytes_per_s'] / 1024:.0f} KB/s", f"{t['queued_entries']} lines"])
    return rows if len(rows) > 1 else []


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)
