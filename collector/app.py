"""The supervisor: builds the pipeline (sources -> queue -> sink), owns every task, shuts down in order."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from typing import Any

from collector.config import Config, spool_directory, start_at_seconds
from collector.docker.discovery import Discovery
from collector.docker.engine import Engine
from collector.docker.logstream import LogStreamClient
from collector.docker.self_id import own_container_id
from collector.metrics import Observability
from collector.pipeline.entry import Chunk
from collector.pipeline.inflight import InFlight
from collector.pipeline.readorder import ReadOrder
from collector.positions import PositionStore
from collector.sinks.base import Sink
from collector.sinks.lanes import make_lanes, merged_stats
from collector.sinks.loki import LokiSink, PushStats
from collector.sinks.stdout import StdoutSink
from collector.sources.files import InotifyHub, TailerSettings
from collector.sources.registry import RegistrySettings, SourceRegistry
from collector.sources.stream import StreamSettings
from collector.spool.lane import LaneSpool
from collector.spool.store import SpoolSettings
from collector.startup_report import settings_facts
from collector.status import build_status
from collector.transform.labeling import Profiler

log = logging.getLogger(__name__)


class Collector:
    def __init__(self, config: Config, sink: Sink | None = None, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.inflight = InFlight()
        self.positions = PositionStore(config.positions.path, config.positions.sync_interval)
        # Positions advance past a chunk once it and every older chunk of its container are durable
        # in a spool or delivered by the sink.
        self.order = ReadOrder(self.positions.advance)
        self.spools: dict[str, LaneSpool] = {}  # by tenant; owned here, closed once at the end of run()
        self.hub = InotifyHub()
        self.engine = Engine(config.docker.host)
        self.observability = Observability(self)
        default_sink: Sink = sink or (
            LokiSink(config.loki, self.observability.sink_metrics) if config.loki.url else StdoutSink()
        )
        # One queue and sender per tenant; the default lane is the only one without tenants_allowed.
        self.lanes = make_lanes(config, default_sink, self._queued, self.observability.sink_metrics,
                                self._make_spool if config.spool.enabled else lambda tenant, lanes: None)
        self.queue, self.sink = self.lanes[""].queue, default_sink
        for tenant in self.spools:  # as a lane starts spilling, what its sink holds is copied to its spool first
            self.lanes[tenant].queue.before_spill = functools.partial(self._insure, tenant)
        self.own_id = config.docker.self_id or own_container_id()
        self.streams = LogStreamClient(config.docker.host)
        self.profiler = Profiler(config)
        self.registry = SourceRegistry(
            queue=self.queue,
            queue_for=lambda tenant: self.lanes[tenant].queue if tenant in self.lanes else self.queue,
            hub=self.hub,
            streams=self.streams,
            positions=self.positions,
            settings=RegistrySettings(
                containers_dir=config.docker.containers_dir,
                tailer=TailerSettings(config.sources.read_chunk_bytes, config.sources.poll_interval),
                stream=StreamSettings(
                    idle_timeout=config.sources.stream_idle_timeout,
                    drain_timeout=config.docker.drain_timeout,
                    max_line_bytes=config.sources.max_line_bytes,
                    max_backoff=config.docker.reconnect_max_backoff,
                ),
                max_line_bytes=config.sources.max_line_bytes,
                own_id=self.own_id,
                start_at=start_at_seconds(config),
                mode=config.sources.mode,
            ),
            inspect=self.engine.inspect,
            is_running=self.engine.is_running,
            profiler=self.profiler,
        )
        self.discovery = Discovery(self.engine, self.registry, config.docker.reconnect_max_backoff, config.docker.relist_interval)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("collector starting", extra=settings_facts(
            self.config, self.config_path, self.own_id, self.registry.files_usable, self.registry.files_problem))
        self.positions.load()
        for tenant, spool in self.spools.items():
            spool.open()
            self.lanes[tenant].queue.backlog_first()
        try:
            if self.config.metrics.listen:
                await self.observability.start(self.config.metrics.listen)  # a busy port: ConfigError, exit 2
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self.hub.run(), name="inotify")
                    writer_task = group.create_task(self.positions.run(), name="positions")
                    sink_tasks = [group.create_task(lane.sink.run(lane.queue, self._acknowledge), name=f"sink:{lane.tenant or 'default'}")
                                  for lane in self.lanes.values()]
                    sink_tasks[0].add_done_callback(lambda _: stop.set())  # a sink that ends early (stdout closed) stops the run
                    spool_tasks = [group.create_task(task, name=f"{what}:{tenant or 'default'}")
                                   for tenant, spool in self.spools.items()
                                   for what, task in (("spool", spool.run()), ("refill", self.lanes[tenant].queue.refill()))]
                    registry_task = group.create_task(self.registry.run(), name="sources")
                    await self.registry.running.wait()  # its task group must exist before events arrive
                    discovery_task = group.create_task(self.discovery.run(), name="discovery")
                    if self.config.metrics.listen:
                        group.create_task(self.observability.run(self.config.metrics.listen), name="metrics")
                    await stop.wait()
                    log.info("stopping: no more reading, flushing")
                    # Order matters: stop learning of containers, stop reading, then flush what was read.
                    discovery_task.cancel()
                    self.registry.stop()
                    await registry_task
                    for lane in self.lanes.values():
                        lane.queue.close()
                    try:
                        async with asyncio.timeout(self.config.shutdown.flush_timeout):
                            await asyncio.shield(asyncio.gather(*sink_tasks))
                    except TimeoutError:
                        for task in sink_tasks:
                            task.cancel()
                        await asyncio.wait(sink_tasks)
                        # What the sink held and what is still queued go to the spool, in read order (a `--rm`
                        # stream's lines are nowhere else); without a spool, positions never passed them.
                        insured = sum(self._insure(tenant) for tenant in self.spools)
                        spooled = sum(lane.queue.spill_remaining() for lane in self.lanes.values())
                        log.error("flush timed out; what the sink held and what was queued go to the spool",
                                  extra={"queued_bytes": self.queue_bytes, "spooled_chunks": spooled, "sink_chunks_spooled": insured})
                    for task in spool_tasks:
                        task.cancel()
                    if spool_tasks:
                        await asyncio.wait(spool_tasks)
                    for spool in self.spools.values():
                        await spool.close()  # durable: their positions advance before the final checkpoint
                    writer_task.cancel()
                    await asyncio.wait([writer_task])  # a save in progress ends before the final one starts
                    await self.positions.save()  # the final checkpoint: everything acknowledged
                    raise _Stopped  # ends the group: cancels what is left (inotify reader, metrics)
            except* _Stopped:
                pass
            except* Exception:
                # The collector's own machinery failed (a per-container fault never gets here):
                # keep what Loki acknowledged so far, then end the process with the error.
                log.error("collector machinery failed; writing the final checkpoint before exiting")
                await self.positions.save()
                raise
        finally:
            for spool in self.spools.values():
                spool.abandon()  # closed already after an orderly stop; after a failure, what is on disk stays
            self.hub.close()
            await self.streams.close()
            await self.engine.close()
        log.info("collector stopped")

    def _make_spool(self, tenant: str, lanes: int) -> LaneSpool:
        config = self.config.spool
        name = f"tenant-{tenant.encode().hex()}" if tenant else "default"  # any tenant id is a safe file name
        settings = SpoolSettings(os.path.join(spool_directory(self.config), name), max(2 * config.segment_bytes, config.max_bytes // lanes),
                                 config.segment_bytes, lane=tenant)
        spool = self.spools[tenant] = LaneSpool(settings, self.order.complete)
        return spool

    def _insure(self, tenant: str) -> int:
        """Copy what the lane's sink holds (read from sources, not yet delivered) to its spool."""
        sink = self.lanes[tenant].sink
        return self.spools[tenant].insure(sink.held()) if isinstance(sink, LokiSink) else 0

    def _queued(self, chunk: Chunk) -> None:
        """A chunk was read: into the queue or a spool."""
        self.inflight.queued(chunk)
        self.order.track(chunk)

    def _acknowledge(self, chunks: list[Chunk]) -> None:
        """Delivered: a read-back chunk settles its spool (its position advanced when it became
        durable); any other advances the positions in read order. Both settle the in-flight ledger."""
        fresh = []
        for chunk in chunks:
            if chunk.spooled is None:
                fresh.append(chunk)
                for lane_spool in self.spools.values():  # a copy made of it as its lane started spilling is done too
                    lane_spool.original_delivered(chunk)
            elif (spool := self.spools.get(chunk.spooled.lane)) is not None:
                spool.delivered(chunk.spooled)
        self.order.complete(fresh)
        self.inflight.acknowledged(chunks)

    # -- what /metrics, /ready and /status read ----------------------------------------------
    @property
    def queue_bytes(self) -> int:
        return sum(lane.queue.nbytes for lane in self.lanes.values())

    def push_stats(self) -> PushStats | None:
        return merged_stats(self.lanes)

    def not_ready(self) -> list[str]:
        problems = []
        if not self.discovery.connected:
            problems.append("docker unreachable")
        problems += self.registry.unreadable()
        for tenant, spool in self.spools.items():
            if spool.bytes > 0.9 * spool.settings.max_bytes:
                problems.append(f"spool{' of tenant ' + tenant if tenant else ''} over 90 % full ({spool.bytes} of {spool.settings.max_bytes} bytes); "
                                "when it is full, sources wait and Docker may rotate unread lines away")
        for lane in self.lanes.values():
            if isinstance(lane.sink, LokiSink):
                waiting = lane.sink.pending or lane.queue.nbytes
                reason = lane.sink.not_ready_reason(self.config.loki.not_ready_after)
                if reason and waiting:
                    problems.append(f"Tenant {lane.tenant}: {reason}" if lane.tenant else reason)
        return problems

    def status(self) -> dict[str, Any]:
        throttled = [{**row, **({"tenant": lane.tenant} if lane.tenant else {})}
                     for lane in self.lanes.values() if isinstance(lane.sink, LokiSink) for row in lane.sink.throttled_streams()]
        status = build_status(self.registry, self.positions, self.inflight, self.queue_bytes, self.push_stats(),
                              self.discovery.connected, throttled)
        status["tables"] = self.table_sizes()
        status["spool"] = self.spool_status()
        return status

    def spool_status(self) -> dict[str, Any]:
        now_ns = time.time_ns()
        spools = list(self.spools.values())
        return {
            "enabled": bool(spools),
            "bytes": sum(spool.bytes for spool in spools),
            "max_bytes": sum(spool.settings.max_bytes for spool in spools),
            "segments": sum(spool.segments for spool in spools),
            "oldest_age_seconds": round(max((spool.oldest_age(now_ns) for spool in spools), default=0.0), 3),
            "spilling": [lane.tenant or "default" for lane in self.lanes.values() if lane.queue.spilling],
            "problems": [spool.problem for spool in spools if spool.problem],
        }

    def table_sizes(self) -> dict[str, int]:
        """Entries in the tables keyed by container, file or label set: flat under churn, or something leaks."""
        sizes = {
            "containers": len(self.registry.containers),
            "inflight_containers": len(self.inflight.containers()),
            "inflight_entries": len(self.inflight),
            "stream_guard_label_sets": self.profiler.guard.size(),
            "sink_unacknowledged_chunks": sum(lane.sink.pending for lane in self.lanes.values() if isinstance(lane.sink, LokiSink)),
            "sink_throttled_label_sets": sum(len(lane.sink.throttle.sets) for lane in self.lanes.values() if isinstance(lane.sink, LokiSink)),
            "queue_paused_containers": sum(len(lane.queue.paused) for lane in self.lanes.values()),
            "read_order_chunks": len(self.order),
            "spool_segments": sum(spool.segments for spool in self.spools.values()),
            "spool_containers_moved_aside": sum(spool.aside_containers for spool in self.spools.values()),
        }
        sizes.update({f"positions_{name}": size for name, size in self.positions.table_sizes().items()})
        sizes.update({f"inotify_{name}": size for name, size in self.hub.table_sizes().items()})
        return sizes


class _Stopped(Exception):
    """Ends the task group after an orderly shutdown (cancels what is left, e.g. the inotify reader)."""


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
