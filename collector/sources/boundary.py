"""The per-container tasks and their fault boundary: the setup task (inspect, bounded in number,
then route) and the task that runs a source. A fault in either stays with its container; what
follows one is the registry's to decide (supervision.py says which way).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from collector.docker.containers import ContainerInfo
from collector.sources import supervision
from collector.sources.handles import HeldLog
from collector.sources.opening import SourceOpener
from collector.sources.source import Source
from collector.sources.startpoint import StartPoints
from collector.sources.tracked import Tracked

log = logging.getLogger(__name__)

INSPECT_CONCURRENCY = 8

Inspect = Callable[[str], Awaitable[ContainerInfo | None]]


class Driver(Protocol):
    """What these tasks ask of the registry that drives the lifecycle."""

    def holds(self, tracked: Tracked) -> bool: ...
    def route(self, tracked: Tracked, held: HeldLog | None, forced: str = "") -> None: ...
    def after_fault(self, tracked: Tracked, stage: str, err: Exception) -> bool: ...
    def set_up_again(self, tracked: Tracked) -> None: ...
    def source_ended(self, tracked: Tracked, source: Source, failure: Exception | None, progressed: bool) -> None: ...
    def remove(self, tracked: Tracked) -> None: ...


class ContainerTasks:
    def __init__(self, driver: Driver, inspect: Inspect, opener: SourceOpener, start_points: StartPoints) -> None:
        self._driver = driver
        self._inspect = inspect
        self._inspect_slots = asyncio.Semaphore(INSPECT_CONCURRENCY)
        self._opener = opener
        self._start_points = start_points
        self.resolving: dict[str, asyncio.Task[None]] = {}

    def spawn_setup(self, group: asyncio.TaskGroup, tracked: Tracked, event_info: ContainerInfo, held: HeldLog, inspected: bool) -> None:
        """Hand `held` to the task that sets the container up: from here on that task owns it."""
        container_id = tracked.info.id
        try:
            task = group.create_task(self._setup(tracked, event_info, held, inspected), name=f"resolve:{container_id[:12]}")
        except BaseException:
            held.close()
            raise
        # A task cancelled before its first step never runs its body: its end releases the log.
        task.add_done_callback(lambda done: self._setup_ended(container_id, done, held))
        self.resolving[container_id] = task

    def _setup_ended(self, container_id: str, task: asyncio.Task[None], held: HeldLog) -> None:
        held.close()
        if self.resolving.get(container_id) is task:
            del self.resolving[container_id]

    async def _setup(self, tracked: Tracked, event_info: ContainerInfo, held: HeldLog, inspected: bool) -> None:
        """Inspect, route and start the container's source: the fault boundary of its setup.
        After a fault it is set up again (inspected afresh, its log opened by path) after a pause."""
        with held:
            while True:
                if tracked.faults:
                    await asyncio.sleep(supervision.backoff(tracked.faults))
                    if tracked.destroyed or not self._driver.holds(tracked):
                        break
                    inspected = False
                try:
                    if not tracked.faults:
                        self._opener.request_early_stream(tracked, held, inspected)
                    await self._inspect_and_route(tracked, event_info, held, inspected)
                    break
                except supervision.MACHINERY_ERRORS:
                    raise
                except Exception as err:  # noqa: BLE001 - one container's fault stays with it
                    held.close()  # what the failed attempt did not hand on; the next one opens by path
                    if not self._driver.after_fault(tracked, "resolve", err):
                        break
        if tracked.source is None and tracked.destroyed:
            self._driver.remove(tracked)

    async def _inspect_and_route(self, tracked: Tracked, event_info: ContainerInfo, held: HeldLog, inspected: bool) -> None:
        container_id = tracked.info.id
        name_at_event = tracked.info.name
        info: ContainerInfo | None = None
        if not inspected:
            try:
                async with self._inspect_slots:
                    info = await self._inspect(container_id)
            except Exception as err:  # noqa: BLE001 - Docker unreachable: what the event said is enough
                log.info("inspect failed; routing by the event", extra={"container_id": container_id[:12], "error": str(err)})
        info = info or event_info
        # Events that came meanwhile win over the inspect: a die, destroy or rename may have passed.
        info.running = info.running and tracked.info.running and not tracked.destroyed
        if tracked.info.name != name_at_event:
            info.name = tracked.info.name
        tracked.info = info
        await held.settle()
        self._driver.route(tracked, held)

    def start_source(self, group: asyncio.TaskGroup, tracked: Tracked, source: Source) -> asyncio.Task[None]:
        return group.create_task(self._run_source(tracked, source), name=f"{source.kind}:{tracked.info.id[:12]}")

    async def _run_source(self, tracked: Tracked, source: Source) -> None:
        """The fault boundary of a running source: its failure stays with its container."""
        container_id = tracked.info.id
        lines_before = tracked.stats.lines
        failure: Exception | None = None
        try:
            await source.run()
        except asyncio.CancelledError:
            raise
        except supervision.MACHINERY_ERRORS:
            raise
        except Exception as err:  # noqa: BLE001 - isolate one container's fault from the rest
            failure = err
        finally:
            if not tracked.destroyed:
                self._start_points.read_upto[container_id] = source.queued_position
        try:
            self._driver.source_ended(tracked, source, failure, progressed=tracked.stats.lines != lines_before)
        except supervision.MACHINERY_ERRORS:
            raise
        except Exception as err:  # noqa: BLE001 - e.g. routing it again failed: same boundary
            if self._driver.after_fault(tracked, "route", err):
                self._driver.set_up_again(tracked)
