"""Follows the engine: list and inspect at start, then events; after the daemon restarts, reconnect and re-list."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any, Protocol

import aiodocker
import aiohttp

from collector.docker.containers import ContainerInfo, from_event
from collector.docker.engine import Engine

log = logging.getLogger(__name__)


class ContainerHandler(Protocol):
    def set_host(self, name: str) -> None: ...
    async def reconcile(self, present: list[ContainerInfo]) -> None: ...
    def preopen(self, container_id: str) -> int | None: ...
    async def started(self, info: ContainerInfo, catch_up: bool = False, preopened_fd: int | None = None) -> None: ...
    def died(self, container_id: str) -> None: ...
    async def destroyed(self, container_id: str) -> None: ...
    def renamed(self, container_id: str, new_name: str) -> None: ...


class Discovery:
    def __init__(self, engine: Engine, handler: ContainerHandler, max_backoff: float) -> None:
        self._engine = engine
        self._handler = handler
        self._max_backoff = max_backoff
        self.connected = False
        self.reconnects = 0

    async def run(self) -> None:
        backoff = 0.25
        while True:
            try:
                self._handler.set_host(await self._engine.host_name())
                async with self._engine.events() as events:
                    await self._relist()
                    self.connected = True
                    log.info("following docker events")
                    backoff = 0.25
                    async for event in events:
                        await self._dispatch(event)
                log.warning("docker event stream ended; reconnecting")
            except (aiohttp.ClientError, aiodocker.DockerError, OSError, ValueError) as err:
                log.warning("docker unreachable; retrying", extra={"error": repr(err), "retry_in_s": backoff})
            self.connected = False
            self.reconnects += 1
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self._max_backoff)

    async def _relist(self) -> None:
        present: list[ContainerInfo] = []
        for container_id in await self._engine.list_ids():
            info = await self._engine.inspect(container_id)
            if info is not None:
                present.append(info)
        await self._handler.reconcile(present)

    async def _dispatch(self, event: dict[str, Any]) -> None:
        action = event.get("Action") or event.get("status", "")
        container_id = (event.get("Actor") or {}).get("ID") or event.get("id", "")
        if not container_id:
            return
        if action == "start":
            # Hold the log open before the inspect round-trip; a --rm container may be gone by then,
            # and what the event says of it is enough.
            fd = self._handler.preopen(container_id)
            try:
                info = await self._engine.inspect(container_id) or from_event(event)
            except BaseException:
                if fd is not None:
                    os.close(fd)
                raise
            await self._handler.started(info, preopened_fd=fd)
        elif action == "die":
            self._handler.died(container_id)
        elif action == "destroy":
            await self._handler.destroyed(container_id)
        elif action == "rename":
            name = ((event.get("Actor") or {}).get("Attributes") or {}).get("name", "")
            self._handler.renamed(container_id, name.lstrip("/"))
