"""The Docker daemon restarts under a running collector: it reconnects, re-lists, and keeps going."""

from __future__ import annotations

import asyncio
import time

import pytest
from dockerengine import DockerEngine
from harness import CollectorProcess
from polling import wait_until

pytestmark = pytest.mark.docker


async def test_collector_survives_a_daemon_restart(own_engine: DockerEngine) -> None:
    proc = await CollectorProcess(own_engine).start()
    try:
        before = f"before-{time.monotonic_ns()}"
        own_engine.run("echo one; sleep 300", name=before)
        await proc.wait_for_lines(before, 1)
        await asyncio.to_thread(own_engine.restart_daemon, 1.0)
        await wait_until(lambda: sum("following docker events" in line for line in proc.stderr) >= 2, 60,
                         what="the collector to reconnect")
        assert any("docker event stream ended" in line or "docker unreachable" in line for line in proc.stderr)
        after = f"after-{time.monotonic_ns()}"
        own_engine.run("echo two; echo three", name=after)
        assert await proc.wait_for_lines(after, 2) == ["two", "three"]
        assert proc.lines_of(before) == ["one"]  # its file was read to the end once, not again
    finally:
        assert await proc.stop() == 0
