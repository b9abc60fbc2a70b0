"""The supervisor: builds the pipeline (sources -> queue -> sink), owns every task, shuts down in order."""

from __future__ import annotations

import asyncio
import logging
import signal

from collector.config import Config, start_at_seconds
from collector.docker.discovery import Discovery
from collector.docker.engine import Engine
from collector.docker.self_id import own_container_id
from collector.pipeline.queue import ChunkQueue
from collector.positions import PositionStore
from collector.sinks.base import Sink
from collector.sinks.loki import LokiSink
from collector.sinks.stdout import StdoutSink
from collector.sources.files import InotifyHub, TailerSettings
from collector.sources.registry import SourceRegistry

log = logging.getLogger(__name__)


def make_sink(config: Config) -> Sink:
    if config.loki.url:
        return LokiSink(config.loki)
    return StdoutSink()


class Collector:
    def __init__(self, config: Config, sink: Sink | None = None) -> None:
        self.config = config
        self.queue = ChunkQueue(config.queue.max_bytes)
        self.positions = PositionStore(config.positions.path, config.positions.sync_interval)
        self.hub = InotifyHub()
        self.engine = Engine(config.docker.host)
        self.sink = sink or make_sink(config)
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
                await asyncio.sleep(0)  # let the registry open its task group before events arrive
                discovery_task = group.create_task(self.discovery.run(), name="discovery")
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
                self.hub.close()
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            await self.engine.close()
        log.info("collector stopped")


class _Stopped(Exception):
    """Ends the task group after an orderly shutdown (cancels what is left, e.g. the inotify reader)."""


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
