"""Follows the engine: list and inspect at start, then events; re-list periodically and after reconnecting.

Handling an event never waits on I/O (the registry's handlers are synchronous and start tasks), so
one container's drain or inspect never holds up the next container's start. After the connection
drops, the events stream is reopened with `since` = the last event seen: dockerd replays its last
256 events, so the gap is covered; a re-list then applies anything the replay could not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import Counter
from typing import Any, Protocol

import aiodocker
import aiohttp

from collector.docker.containers import ContainerInfo, from_event
from collector.docker.eventlines import Skipped

log = logging.getLogger(__name__)


class DockerEngine(Protocol):
    """What discovery needs of Docker; a scripted fake drives the registry in tests."""

    async def host_name(self) -> str: ...
    async def list_states(self) -> dict[str, tuple[str, bool]]: ...
    async def inspect(self, container_id: str) -> ContainerInfo | None: ...
    def events(self, since: str = "") -> Any: ...


class ContainerHandler(Protocol):
    containers: dict[str, Any]

    def set_host(self, name: str) -> None: ...
    def reconcile(self, present: list[ContainerInfo]) -> None: ...
    def started(self, info: ContainerInfo, inspected: bool = False) -> None: ...
    def died(self, container_id: str) -> None: ...
    def destroyed(self, container_id: str) -> None: ...
    def renamed(self, container_id: str, new_name: str) -> None: ...


class Discovery:
    def __init__(self, engine: DockerEngine, handler: ContainerHandler, max_backoff: float, relist_interval: float = 60.0) -> None:
        self._engine = engine
        self._handler = handler
        self._max_backoff = max_backoff
        self._relist_interval = relist_interval
        self.connected = False
        self.reconnects = 0
        self.relists = 0
        self.events_seen = 0
        self.events_skipped: Counter[str] = Counter()  # by reason (too_large, bad_json): a fixed set
        self._last_event = ""  # "<seconds>.<nanoseconds>" of the last event handled

    async def run(self) -> None:
        backoff = 0.25
        while True:
            try:
                self._handler.set_host(await self._engine.host_name())
                async with self._engine.events(since=self._last_event) as events:
                    await self._relist()
                    self.connected = True
                    log.info("following docker events", extra={"replay_since": self._last_event or None})
                    backoff = 0.25
                    await self._follow(events)
                log.warning("docker event stream ended; reconnecting")
            except (aiohttp.ClientError, aiodocker.DockerError, OSError, ValueError, TimeoutError) as err:
                log.warning("docker unreachable; retrying", extra={"error": f"{err.__class__.__name__}: {err}", "retry_in_s": backoff})
            self.connected = False
            self.reconnects += 1
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self._max_backoff)

    async def _follow(self, events: Any) -> None:
        """Handle events as they come; re-list every interval. The stream is read by a pump task, so
        waiting for the next event can time out without ending the stream."""
        arrived: asyncio.Queue[dict[str, Any] | Skipped | BaseException | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in events:
                    arrived.put_nowait(event)
                arrived.put_nowait(None)
            except Exception as err:  # noqa: BLE001 - handed to the loop below, which raises it
                arrived.put_nowait(err)

        loop = asyncio.get_running_loop()
        pump_task = asyncio.create_task(pump(), name="docker-events")
        try:
            next_relist = loop.time() + self._relist_interval
            while True:
                try:
                    async with asyncio.timeout(max(0.0, next_relist - loop.time())):
                        item = await arrived.get()
                except TimeoutError:
                    await self._relist()
                    next_relist = loop.time() + self._relist_interval
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Skipped):
                    self._skipped(item)
                    # Whatever it was about (a start, a destroy), a re-list finds it; not more
                    # often than once a second however many such events come.
                    next_relist = min(next_relist, loop.time() + 1.0)
                    continue
                self._dispatch(item)
        finally:
            pump_task.cancel()
            await asyncio.gather(pump_task, return_exceptions=True)

    async def _relist(self) -> None:
        """A safety net against a connection that died silently or a replay that fell short."""
        states = await self._engine.list_states()
        known = self._handler.containers
        present: list[ContainerInfo] = []
        for container_id, (name, running) in states.items():
            tracked = known.get(container_id)
            if tracked is not None and tracked.info.log_driver:
                # Known: what changed is its name and whether it runs; no inspect needed.
                present.append(dataclasses.replace(tracked.info, name=name or tracked.info.name, running=running))
                continue
            info = await self._engine.inspect(container_id)
            if info is not None:
                present.append(info)
        self._handler.reconcile(present)
        self.relists += 1

    def _skipped(self, skipped: Skipped) -> None:
        self.events_skipped[skipped.reason] += 1
        log.warning("docker event skipped", extra={
            "reason": skipped.reason, "bytes": skipped.size, "action": skipped.action or None,
            "container_id": skipped.container_id or None, "time_nano": skipped.time_nano or None,
        })
        if skipped.time_nano:
            # `since` is inclusive: resume 1 ns after it, or every reconnect would replay it again.
            seconds, nanos = divmod(skipped.time_nano + 1, 1_000_000_000)
            self._last_event = f"{seconds}.{nanos:09d}"

    def _dispatch(self, event: dict[str, Any]) -> None:
        action = event.get("Action") or event.get("status", "")
        container_id = (event.get("Actor") or {}).get("ID") or event.get("id", "")
        time_nano = event.get("timeNano")
        if time_nano:
            seconds, nanos = divmod(int(time_nano), 1_000_000_000)
            self._last_event = f"{seconds}.{nanos:09d}"
        self.events_seen += 1
        if not container_id:
            return
        if action == "start":
            self._handler.started(from_event(event))
        elif action == "die":
            self._handler.died(container_id)
        elif action == "destroy":
            self._handler.destroyed(container_id)
        elif action == "rename":
            name = ((event.get("Actor") or {}).get("Attributes") or {}).get("name", "")
            self._handler.renamed(container_id, name.lstrip("/"))
