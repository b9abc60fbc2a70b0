"""Runs the real collector as a subprocess (`python -m collector`) and reads what it delivers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from typing import Any

from dockerengine import DockerEngine
from polling import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where collector runs keep their positions; conftest.py points it at a session dir it removes.
SCRATCH: str | None = None


class CollectorProcess:
    """The collector with the stdout sink: every entry it prints is parsed into `entries`."""

    def __init__(
        self,
        engine: DockerEngine,
        env: dict[str, str] | None = None,
        config_path: str | None = None,
        positions_path: str | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.engine = engine
        # A restart test passes the same path to each run; otherwise every run starts fresh.
        self.positions_path = positions_path or os.path.join(tempfile.mkdtemp(prefix="pos-", dir=SCRATCH), "positions.json")
        self.env = {
            **os.environ,
            "DOCKER_HOST": engine.host,
            "COLLECTOR_DOCKER__CONTAINERS_DIR": engine.containers_dir,
            "COLLECTOR_LOG__LEVEL": "info",
            "COLLECTOR_METRICS__LISTEN": "",
            "COLLECTOR_POSITIONS__PATH": self.positions_path,
            "PYTHONPATH": REPO,
            **(env or {}),
        }
        self.config_path = config_path
        self.command = command or [sys.executable, "-m", "collector"]  # e.g. run under setpriv as another uid
        self.entries: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> CollectorProcess:
        args = list(self.command)
        if self.config_path:
            args += ["--config", self.config_path]
        self.process = await asyncio.create_subprocess_exec(
            *args, env=self.env, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024,
        )
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]
        # Ready once it follows Docker events: its own log says so.
        await wait_until(lambda: any("following docker events" in line for line in self.stderr) or self.process.returncode is not None,
                         timeout=30, what="collector to follow docker events")
        assert self.process.returncode is None, f"collector exited: {self.stderr[-20:]}"
        if self.env.get("COLLECTOR_METRICS__LISTEN"):
            await wait_until(lambda: self._metrics_port() is not None, timeout=30, what="metrics listening")
        return self

    def _metrics_port(self) -> int | None:
        for line in self.stderr:
            if "metrics listening" in line:
                return int(json.loads(line)["port"])
        return None

    @property
    def metrics_url(self) -> str:
        port = self._metrics_port()
        assert port is not None, "started without metrics (COLLECTOR_METRICS__LISTEN empty)"
        return f"http://127.0.0.1:{port}"

    async def _read_stdout(self) -> None:
        assert self.process and self.process.stdout
        async for raw in self.process.stdout:
            self.entries.append(json.loads(raw))

    async def _read_stderr(self) -> None:
        assert self.process and self.process.stderr
        async for raw in self.process.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip("\n"))

    def lines_of(self, container_name: str) -> list[str]:
        return [e["line"] for e in self.entries if e["labels"].get("container_name") == container_name]

    def entries_of(self, container_name: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["labels"].get("container_name") == container_name]

    async def wait_for_lines(self, container_name: str, count: int, timeout: float = 60) -> list[str]:
        await wait_until(lambda: len(self.lines_of(container_name)) >= count, timeout,
                         what=lambda: f"{count} lines of {container_name} (have {len(self.lines_of(container_name))})")
        return self.lines_of(container_name)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        for reader in self._readers:
            await reader
        return code
