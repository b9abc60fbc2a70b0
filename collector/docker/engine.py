"""The few Engine API calls discovery makes, through aiodocker. Only GETs: it works behind a read-only proxy.

Log streams do not go through here: they have a connection pool of their own (`logstream.py`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiodocker
import aiohttp
from yarl import URL

from collector.docker.containers import ContainerInfo, from_inspect
from collector.docker.eventlines import Event, EventLines

WATCHED_EVENTS = ("start", "die", "destroy", "rename")
# aiodocker's default ClientTimeout has no timeouts at all: a hung daemon would hang discovery.
_CALL_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)


class Engine:
    def __init__(self, host: str = "") -> None:
        # "" lets aiodocker apply DOCKER_HOST, then the local socket.
        self.docker = aiodocker.Docker(url=host or None, timeout=_CALL_TIMEOUT)

    async def host_name(self) -> str:
        info = await self.docker.system.info()
        return str(info.get("Name", ""))

    async def list_states(self) -> dict[str, tuple[str, bool]]:
        """Every container: id -> (name, running), in one call (no inspect)."""
        containers = await self.docker.containers.list(all=True)
        states = {}
        for container in containers:
            # The list's own fields, through the container's public mapping interface.
            names = (container["Names"] if "Names" in container else None) or [""]
            states[container.id] = (names[0].lstrip("/"), "State" in container and container["State"] == "running")
        return states

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """None when the container is already gone."""
        try:
            data = await self.docker.containers.container(container_id).show()
        except aiodocker.DockerError as err:
            if err.status == 404:
                return None
            raise
        return from_inspect(data)

    async def is_running(self, container_id: str) -> bool | None:
        """None when Docker cannot be asked; False when the container is gone."""
        try:
            info = await self.inspect(container_id)
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError):
            return None
        return info is not None and info.running

    @asynccontextmanager
    async def events(self, since: str = "") -> AsyncIterator[AsyncIterator[Event]]:
        """Container events from now on (or replayed from `since`: dockerd keeps its last 256). The
        stream is open when this is entered, so a list taken afterwards misses nothing in between.
        Lines are split here, with our own limit (`eventlines`): an event too large or not JSON
        comes out as `Skipped` instead of ending the stream."""
        params = {"filters": json.dumps({"type": ["container"], "event": list(WATCHED_EVENTS)})}
        if since:
            params["since"] = since
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)
        # aiodocker's session and host, with an unversioned path (dockerd serves its newest API there).
        url = URL(f"{self.docker.docker_host}/events")
        async with self.docker.session.get(url, params=params, timeout=timeout) as response:
            if response.status != 200:
                text = await response.text(errors="replace")
                raise aiohttp.ClientResponseError(response.request_info, response.history, status=response.status,
                                                  message=text[:300])

            async def events() -> AsyncIterator[Event]:
                lines = EventLines()
                async for data in response.content.iter_any():
                    for item in lines.feed(data):
                        yield item

            yield events()

    async def close(self) -> None:
        await self.docker.close()
