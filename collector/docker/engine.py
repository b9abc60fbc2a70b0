"""The few Engine API calls the collector makes, through aiodocker. Only GETs: it works behind a read-only proxy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiodocker
import aiohttp

from collector.docker.containers import ContainerInfo, from_inspect

WATCHED_EVENTS = ("start", "die", "destroy", "rename")


class Engine:
    def __init__(self, host: str = "") -> None:
        # "" lets aiodocker apply DOCKER_HOST, then the local socket.
        self.docker = aiodocker.Docker(url=host or None)

    async def host_name(self) -> str:
        info = await self.docker.system.info()
        return str(info.get("Name", ""))

    async def list_ids(self) -> list[str]:
        containers = await self.docker.containers.list(all=True)
        return [container.id for container in containers]

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """None when the container is already gone."""
        try:
            data = await self.docker.containers.container(container_id).show()
        except aiodocker.DockerError as err:
            if err.status == 404:
                return None
            raise
        return from_inspect(data)

    @asynccontextmanager
    async def events(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Container events from now on. The stream is open when this is entered, so a list taken
        afterwards misses nothing in between."""
        params = {"filters": json.dumps({"type": ["container"], "event": list(WATCHED_EVENTS)})}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)
        async with self.docker._query("events", params=params, timeout=timeout) as response:

            async def lines() -> AsyncIterator[dict[str, Any]]:
                async for raw in response.content:
                    if raw.strip():
                        yield json.loads(raw)

            yield lines()

    async def close(self) -> None:
        await self.docker.close()
