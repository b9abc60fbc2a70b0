"""Untrusted input and churn on a real engine: a health probe every 100 ms leaves the collector's
tables at their baseline; containers with 600 KB and 1.3 MB of labels neither end discovery nor
go uncollected; `docker.containers_dir` spelled with a trailing `//` still wakes the tailers by
inotify (the poll is set to a minute here, so only inotify can deliver in time)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from asyncinotify import Inotify, Mask
from dockerengine import DockerEngine
from harness import CollectorProcess
from scrape import get, scrape, value

pytestmark = pytest.mark.docker


async def tables(proc: CollectorProcess) -> dict[str, int]:
    status, body = await get(f"{proc.metrics_url}/status")
    assert status == 200
    return body["tables"]


async def test_health_probes_every_100ms_leave_the_tables_at_baseline(containers: DockerEngine) -> None:
    proc = await CollectorProcess(containers, env={"COLLECTOR_METRICS__LISTEN": "127.0.0.1:0"}).start()
    name = f"probed-{time.monotonic_ns()}"
    try:
        cid = containers.run("while true; do echo alive; sleep 1; done", "--health-cmd", "true",
                             "--health-interval", "100ms", "--health-start-period", "0s", name=name)
        await proc.wait_for_lines(name, 2)
        directory = os.path.dirname(containers.log_path(cid))
        temp_files = 0
        with Inotify() as watcher:  # proof that dockerd writes its temp files here on every probe
            watcher.add_watch(directory, Mask.CREATE)
            before = await tables(proc)
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline:
                try:
                    async with asyncio.timeout(deadline - time.monotonic()):
                        event = await watcher.get()
                except TimeoutError:
                    break
                if event.name and str(event.name).startswith(".tmp-"):
                    temp_files += 1
        after = await tables(proc)
        print(f"\nhealth probes: {temp_files} temp files created in 25 s; tables before {before}, after {after}")
        assert temp_files >= 100, "the engine did not write its probe temp files: the test proves nothing"
        assert after == before
        assert len(proc.lines_of(name)) >= 20
    finally:
        assert await proc.stop() == 0


def label_files(directory: str, prefix: str, count: int) -> list[str]:
    """`docker run` reads one --label-file line up to 64 KiB: several files make the total."""
    paths = []
    for index in range(count):
        path = os.path.join(directory, f"{prefix}-{index}.labels")
        with open(path, "w") as handle:
            handle.write(f"big.label.{index}={'x' * 60_000}\n")
        paths.append(path)
    return [arg for path in paths for arg in ("--label-file", path)]


async def test_containers_with_huge_labels_do_not_end_discovery_and_are_collected(containers: DockerEngine, tmp_path) -> None:
    proc = await CollectorProcess(containers, env={"COLLECTOR_METRICS__LISTEN": "127.0.0.1:0"}).start()
    tag = time.monotonic_ns()
    try:
        # 600 KB: over aiohttp's 512 KiB line limit, under ours (read and handled as any event).
        big = f"labels600k-{tag}"
        containers.run("echo big 1; sleep 600", *label_files(str(tmp_path), "big", 10), name=big)
        await proc.wait_for_lines(big, 1, timeout=30)
        # 1.3 MB: over ours; skipped, counted, and the re-list that follows still finds the container.
        huge = f"labels1300k-{tag}"
        containers.run("echo huge 1; sleep 600", *label_files(str(tmp_path), "huge", 22), name=huge)
        await proc.wait_for_lines(huge, 1, timeout=30)
        after = f"after-{tag}"
        containers.run("echo after 1", name=after)
        await proc.wait_for_lines(after, 1, timeout=30)
        assert proc.process is not None and proc.process.returncode is None
        samples = await scrape(proc.metrics_url)
        assert value(samples, "collector_docker_events_skipped_total", reason="too_large") >= 1
        assert value(samples, "collector_docker_connected") == 1
        assert any("docker event skipped" in line for line in proc.stderr)
    finally:
        assert await proc.stop() == 0


async def test_containers_dir_with_a_trailing_double_slash_still_wakes_on_inotify(containers: DockerEngine) -> None:
    proc = await CollectorProcess(containers, env={
        "COLLECTOR_DOCKER__CONTAINERS_DIR": containers.containers_dir + "//",
        "COLLECTOR_SOURCES__POLL_INTERVAL": "60s",  # a wake within seconds can only come from inotify
    }).start()
    name = f"slash-{time.monotonic_ns()}"
    try:
        containers.run("sleep 3; for i in 1 2 3 4 5; do echo tick $i; sleep 1; done; sleep 600", name=name)
        lines = await proc.wait_for_lines(name, 5, timeout=20)
        assert lines == [f"tick {i}" for i in range(1, 6)]
        status = [entry for entry in proc.entries if entry["labels"].get("container_name") == name]
        assert status, "read from its file"
    finally:
        assert await proc.stop() == 0
