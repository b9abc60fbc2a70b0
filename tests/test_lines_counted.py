"""collector_lines_read_total counts every delivered line, the last one without a newline too."""

from __future__ import annotations

import time

import pytest
from dockerengine import DockerEngine
from harness import CollectorProcess
from polling import wait_until
from scrape import scrape

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("mode", ["auto", "stream"])
async def test_tty_container_final_line_without_newline_is_counted(containers: DockerEngine, mode: str) -> None:
    proc = await CollectorProcess(containers, env={"COLLECTOR_METRICS__LISTEN": "127.0.0.1:0",
                                                   "COLLECTOR_SOURCES__MODE": mode}).start()
    try:
        name = f"tty-{mode}-{time.monotonic_ns()}"
        # A TTY container: lines end in \r\n, and the last has none (the process exits mid-line).
        containers.run("for i in 1 2 3 4; do echo line $i; done; printf 'last without newline'", "-t", name=name)
        lines = await proc.wait_for_lines(name, 5)
        assert lines[-1] == "last without newline"
        counted: list[dict] = []

        async def counted_all() -> bool:
            # The series of this container, whatever its `source` label says once it has stopped.
            samples = await scrape(proc.metrics_url)
            counted.append({dict(labels)["source"]: v for (metric, labels), v in samples.items()
                            if metric == "collector_lines_read_total" and dict(labels).get("container_name") == name})
            return sum(counted[-1].values()) == 5

        await wait_until(counted_all, timeout=30, what=lambda: f"lines_read_total == 5 (last scrape: {counted[-1:]})")
        assert len(proc.lines_of(name)) == 5
    finally:
        await proc.stop()
