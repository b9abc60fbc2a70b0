"""The inotify hub's tables stay bounded under churn, and a directory named in any spelling wakes
its subscribers. Plain files in a temp dir: no Docker."""

from __future__ import annotations

import asyncio
import os
import uuid

from polling import wait_until

from collector.config import load_config
from collector.sources.inotify import InotifyHub


def _probe_temp_files(directory: str, count: int, hub: InotifyHub) -> None:
    """What dockerd does on every health probe: writes config.v2.json and hostconfig.json through a
    temp file with a random suffix, renamed over the real one."""
    for index in range(count):
        for final in ("config.v2.json", "hostconfig.json"):
            temp = os.path.join(directory, f".tmp-{final}{uuid.uuid4().int % 10**9}")
            with open(temp, "w") as handle:
                handle.write("{}")
            os.rename(temp, os.path.join(directory, final))
        if index % 200 == 0:
            hub.sync()  # keep the kernel's queue (16384 events by default) from overflowing
    hub.sync()


async def test_health_probe_temp_files_leave_the_tables_at_baseline(tmp_path) -> None:
    container_id = "c" * 64
    directory = tmp_path / container_id
    directory.mkdir()
    log_name = f"{container_id}-json.log"
    hub = InotifyHub()
    try:
        wake = hub.subscribe(str(directory))
        (directory / log_name).write_bytes(b"")  # the live log: its creations are what a tailer asks for
        hub.sync()
        assert hub.creations(str(directory), log_name) == 1
        baseline = hub.table_sizes()
        _probe_temp_files(str(directory), 10_000, hub)
        assert hub.overflows == 0
        assert hub.table_sizes() == baseline, "10,000 probes' temp files must not grow any table"
        assert hub.creations(str(directory), log_name) == 1
        hub.unsubscribe(str(directory), wake)
        assert sum(hub.table_sizes().values()) == 0
    finally:
        hub.close()


async def test_a_directory_spelled_with_doubled_or_trailing_slashes_still_wakes_its_subscriber(tmp_path) -> None:
    (tmp_path / "containers" / "abc").mkdir(parents=True)
    hub = InotifyHub()
    runner = asyncio.create_task(hub.run())
    try:
        for spelling in (f"{tmp_path}//containers/abc", f"{tmp_path}/containers//abc", f"{tmp_path}/containers/abc/"):
            wake = hub.subscribe(spelling)
            await asyncio.sleep(0.05)
            wake.clear()
            with open(os.path.join(spelling, "abc-json.log"), "ab") as handle:
                handle.write(b"x\n")
            await wait_until(wake.is_set, 5, what=f"a wakeup for a directory spelled {spelling!r}")
            assert hub.watching(spelling)
            hub.unsubscribe(spelling, wake)
            assert hub.watch_count == 0
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        hub.close()


def test_containers_dir_is_normalised_in_config(tmp_path) -> None:
    for spelling in ("/var/lib/docker/containers/", "/var/lib//docker/containers", "/var/lib/docker/containers//"):
        config = load_config(None, {"COLLECTOR_DOCKER__CONTAINERS_DIR": spelling})
        assert config.docker.containers_dir == "/var/lib/docker/containers"
