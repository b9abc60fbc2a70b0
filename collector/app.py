"""The supervisor: builds the pipeline (sources -> queue -> sink), owns every task, shuts down in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

from collector.config import Config, start_at_seconds
from collector.docker.discovery import Discovery
from collector.docker.engine import Engine
from collector.docker.self_id import own_container_id
from collector.metrics import Observability
from collector.pipeline.queue import ChunkQueue
from collector.positions import PositionStore
from collector.sinks.base import Sink
from collector.sinks.loki import LokiSink, PushStats
from collector.sinks.stdout import StdoutSink
from collector.sources.files import FileTailer, InotifyHub, TailerSettings
from collector.sources.registry import SourceRegistry

log = logging.getLogger(__name__)


class Collector:
    def __init__(self, config: Config, sink: Sink | None = None) -> None:
        self.config = config
        self.queue = ChunkQueue(config.queue.max_bytes)
        self.positions = PositionStore(config.positions.path, config.positions.sync_interval)
        self.hub = InotifyHub()
        self.engine = Engine(config.docker.host)
        self.observability = Observability(self)
        self.sink: Sink = sink or (
            LokiSink(config.loki, self.observability.sink_metrics) if config.loki.url else StdoutSink()
        )
        self.own_id = config.docker.self_id or own_container_id()
        self.registry = SourceRegistry(
            queue=self.queue,
            hub=self.hub,
            containers_dir=config.docker.containers_dir,
            settings=TailerSettings(config.sources.read_chunk_bytes, config.sources.poll_interval),
            max_line_bytes=config.sources.max_line_bytes,
            static_labels=config.labels.static,
            host_label=config.labels.host,
            drain_timeout=config.docker.drain_timeout,
            own_id=self.own_id,
            positions=self.positions,
            start_at=start_at_seconds(config),
        )
        self.discovery = Discovery(self.engine, self.registry, config.docker.reconnect_max_backoff)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("collector starting", extra={"own_container": (self.own_id or "")[:12]})
        self.positions.load()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.hub.run(), name="inotify")
                writer_task = group.create_task(self.positions.run(), name="positions")
                sink_task = group.create_task(self.sink.run(self.queue, self.positions.acknowledge), name="sink")
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
                self.queue.close()
                try:
                    async with asyncio.timeout(self.config.shutdown.flush_timeout):
                        await asyncio.shield(sink_task)
                except TimeoutError:
                    log.error("flush timed out; unsent entries stay in the log files", extra={"queued_bytes": self.queue.nbytes})
                    sink_task.cancel()
                writer_task.cancel()
                await self.positions.save()  # the final checkpoint: everything acknowledged
                raise _Stopped  # ends the group: cancels what is left (inotify reader, metrics)
        except* _Stopped:
            pass
        finally:
            self.hub.close()
            await self.engine.close()
        log.info("collector stopped")

    # -- what /metrics, /ready and /status read ----------------------------------------------
    def push_stats(self) -> PushStats | None:
        return self.sink.stats if isinstance(self.sink, LokiSink) else None

    def not_ready(self) -> list[str]:
        problems = []
        if not self.discovery.connected:
            problems.append("docker unreachable")
        if isinstance(self.sink, LokiSink):
            stats = self.sink.stats
            waiting = self.sink.pending or self.queue.nbytes
            if not stats.last_push_ok and waiting:
                problems.append(f"last push failed: {stats.last_error}")
        return problems

    def status(self) -> dict[str, Any]:
        now_ns = time.time_ns()
        containers = []
        for cid, tracked in sorted(self.registry.containers.items(), key=lambda item: item[1].info.name):
            stats = tracked.stats
            row: dict[str, Any] = {
                "id": cid,
                "name": tracked.info.name,
                "mode": tracked.mode,
                "running": tracked.info.running,
                "log_driver": tracked.info.log_driver,
                "skip_reason": tracked.skip_reason,
                "lines": stats.lines if stats else 0,
                "bytes": stats.bytes if stats else 0,
                "errors": stats.errors if stats else 0,
                "last_error": stats.last_error if stats else "",
            }
            source = tracked.source
            if isinstance(source, FileTailer):
                acked = self.positions.get(cid)
                try:
                    size: int | None = os.stat(source.path).st_size
                except OSError:
                    size = None
                acked_offset = acked.offset if acked and acked.inode == source.inode else 0
                lag_bytes = max(0, (size or 0) - acked_offset) if size is not None else 0
                last_ns = stats.last_entry_ns if stats else 0
                row.update(
                    path=source.path, inode=source.inode, read_offset=source.offset, acked_offset=acked_offset,
                    size=size, lag_bytes=lag_bytes,
                    lag_seconds=round((now_ns - last_ns) / 1e9, 3) if lag_bytes and last_ns else 0.0,
                )
            containers.append(row)
        push = self.push_stats()
        return {
            "host": self.registry.host,
            "docker_connected": self.discovery.connected,
            "queue_bytes": self.queue.nbytes,
            "sink": "loki" if push is not None else "stdout",
            "last_push_ok": push.last_push_ok if push else True,
            "containers": containers,
        }


class _Stopped(Exception):
    """Ends the task group after an orderly shutdown (cancels what is left, e.g. the inotify reader)."""


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
