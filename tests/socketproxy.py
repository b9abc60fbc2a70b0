"""The repo's Docker socket proxy config (deploy/haproxy/haproxy.cfg), run by Debian's haproxy in front
of the test engine's unix socket, on a 127.0.0.1 port. Every request it answers is logged and parsed."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass

from dockerengine import DockerEngine
from harness import REPO
from polling import wait_until

CONFIG = os.path.join(REPO, "deploy", "haproxy", "haproxy.cfg")


@dataclass(frozen=True, slots=True)
class Logged:
    client: str
    method: str
    uri: str
    status: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SocketProxy:
    def __init__(self, engine: DockerEngine) -> None:
        if not engine.host.startswith("unix://"):
            raise RuntimeError(f"the proxy forwards to a unix socket; the test engine is at {engine.host}")
        if shutil.which("haproxy") is None:
            raise RuntimeError("haproxy is missing (apt-get install haproxy): it runs the proxy config")
        self.engine_socket = engine.host.removeprefix("unix://")
        self.port = free_port()
        self.lines: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def __aenter__(self) -> SocketProxy:
        env = {**os.environ, "PROXY_BIND": f"127.0.0.1:{self.port}", "DOCKER_SOCKET": self.engine_socket}
        # -db: foreground, logs on stdout as the config says.
        self._process = await asyncio.create_subprocess_exec(
            "haproxy", "-db", "-f", CONFIG, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        await wait_until(self._accepting, 30, what=lambda: f"haproxy listening on {self.port}: {self.lines[-5:]}")
        return self

    async def _accepting(self) -> bool:
        assert self._process is not None
        if self._process.returncode is not None:
            raise RuntimeError(f"haproxy exited with {self._process.returncode}: {self.lines[-10:]}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def _read(self) -> None:
        assert self._process and self._process.stdout
        async for raw in self._process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def requests(self) -> list[Logged]:
        """Answered requests, from the config's log-format: `client method "uri" status time`."""
        logged = []
        for line in self.lines:
            parts = line.split(" ")
            if len(parts) == 5 and parts[2].startswith('"') and parts[3].isdigit():
                logged.append(Logged(parts[0], parts[1], parts[2].strip('"'), int(parts[3])))
        return logged

    async def logged(self, enough: Callable[[list[Logged]], bool], timeout: float = 30) -> list[Logged]:
        """The answered requests, once `enough` of them are logged: haproxy writes a request's line
        after its answer went out (a stream's when its connection ends), so a client that has its
        answer may look before the line is read."""
        def when_enough() -> list[Logged] | None:
            calls = self.requests()
            return calls if enough(calls) else None

        return await wait_until(when_enough, timeout, what=lambda: f"enough logged requests: {self.requests()}")

    async def __aexit__(self, *exc: object) -> None:
        assert self._process is not None and self._reader is not None
        if self._process.returncode is None:
            self._process.terminate()
        try:
            await asyncio.wait_for(self._process.wait(), 20)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        await self._reader


async def http_status(request: bytes, *, port: int | None = None, unix_path: str | None = None) -> int:
    """Send one raw HTTP/1.1 request (exactly as written: no client normalizes its path) to 127.0.0.1:port
    or a unix socket, and return the answer's status."""
    if unix_path:
        reader, writer = await asyncio.open_unix_connection(unix_path)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split(b" ")[1])
