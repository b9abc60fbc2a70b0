"""What an operator sees: the startup log (config, sink, containers dir, each container's route,
own id) and /status with each container's state and delivery lag, against a real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from dockerengine import DockerEngine
from harness import REPO, CollectorProcess
from loki_receiver import LokiReceiver
from polling import wait_until
from scrape import get, scrape, value

pytestmark = pytest.mark.docker


def logged(proc: CollectorProcess, message: str) -> dict | None:
    for line in proc.stderr:
        if f'"msg":"{message}"' in line:
            return json.loads(line)
    return None


async def test_startup_log_names_config_sink_containers_dir_and_each_route(containers: DockerEngine, tmp_path) -> None:
    tag = time.monotonic_ns()
    names = {"file": f"boot-file-{tag}", "local": f"boot-local-{tag}", "none": f"boot-none-{tag}"}
    containers.run("echo hi; sleep 300", name=names["file"])
    containers.run("echo hi; sleep 300", "--log-driver", "local", name=names["local"])
    containers.run("sleep 300", "--log-driver", "none", name=names["none"])
    async with LokiReceiver(require_basic=("ops", "s3cret")) as receiver:
        config = tmp_path / "config.yaml"
        url = receiver.push_url.replace("http://", "http://ops:s3cret@")
        config.write_text(f"loki:\n  url: {url}\n")
        proc = await CollectorProcess(containers, config_path=str(config)).start()
        try:
            await wait_until(lambda: logged(proc, "containers found") is not None, 60, what="the containers-found line")
            starting = logged(proc, "collector starting")
            assert starting is not None
            assert starting["config_file"] == str(config)
            assert starting["sink"].startswith(f"loki {receiver.push_url.replace('http://', 'http://ops:***@')}")
            assert "s3cret" not in "\n".join(proc.stderr)
            assert starting["containers_dir"] == containers.containers_dir and starting["containers_dir_readable"] is True
            assert starting["docker_host"] == containers.host  # from DOCKER_HOST when docker.host is empty
            assert starting["own_container"].startswith("none detected")  # the test runs it outside a container
            found = logged(proc, "containers found")
            assert found is not None
            read_as = [line for line in found["read_as"] if str(tag) in line]
            assert sorted(read_as) == sorted([f"{names['file']}: file", f"{names['local']}: stream",
                                             f"{names['none']}: skipped (driver_none)"])
            # The credentials in the URL are used, not only hidden.
            await receiver.wait_for(lambda: receiver.lines({"container_name": names["file"]}) == ["hi"])
        finally:
            assert await proc.stop() == 0


async def test_startup_log_says_stdout_and_unreadable_containers_dir(containers: DockerEngine, tmp_path) -> None:
    missing = str(tmp_path / "no-such-dir")
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    proc = await CollectorProcess(containers, config_path=str(config), env={"COLLECTOR_DOCKER__CONTAINERS_DIR": missing}).start()
    try:
        starting = logged(proc, "collector starting")
        assert starting is not None
        assert starting["config_file"] == str(config) and starting["sink"].startswith("stdout")
        assert starting["containers_dir_readable"] is False
        assert starting["containers_dir_problem"] == f"containers dir {missing} does not exist"
    finally:
        assert await proc.stop() == 0


def rows(status: dict) -> dict[str, dict]:
    return {row["name"]: row for row in status["containers"]}


async def test_status_shows_state_unacknowledged_bytes_and_delivery_lag(containers: DockerEngine) -> None:
    async with LokiReceiver() as receiver:
        proc = await CollectorProcess(containers, env={
            "COLLECTOR_LOKI__URL": receiver.push_url, "COLLECTOR_METRICS__LISTEN": "127.0.0.1:0",
            "COLLECTOR_LOKI__MIN_BACKOFF": "100ms", "COLLECTOR_LOKI__MAX_BACKOFF": "300ms",
        }).start()
        try:
            receiver.down = True
            tag = time.monotonic_ns()
            running, exited, removed = f"lag-run-{tag}", f"lag-exit-{tag}", f"lag-rm-{tag}"
            containers.run("echo one; sleep 300", name=running)
            containers.run("echo two", name=exited)
            containers.run("echo three; sleep 300", name=removed)

            async def status() -> dict[str, dict]:
                return rows((await get(f"{proc.metrics_url}/status"))[1])

            async def waiting(name: str, state: str, min_lag: float) -> bool:
                row = (await status()).get(name)
                return bool(row and row["state"] == state and row["unacked_bytes"] > 0 and row["delivery_lag_seconds"] >= min_lag)

            await wait_until(lambda: waiting(running, "running", 2.0), 60, what="lag of the running container grows")
            await wait_until(lambda: waiting(exited, "exited", 0.0), 60, what="the exited container's line waits")
            await wait_until(lambda: waiting(removed, "running", 0.0), 60, what="the third container's line waits")
            containers.rm(removed)
            await wait_until(lambda: waiting(removed, "destroyed-draining", 0.0), 60, what="removed, its line still in flight")

            table = subprocess.run([sys.executable, "-m", "collector", "status", "--url", proc.metrics_url], capture_output=True,
                                   text=True, timeout=30, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
            assert table.returncode == 0, table.stderr
            line = next(line for line in table.stdout.splitlines() if line.startswith(running))
            assert " running " in line and " file " in line

            receiver.down = False
            for name, text in ((running, "one"), (exited, "two"), (removed, "three")):
                await receiver.wait_for(lambda name=name, text=text: receiver.lines({"container_name": name}) == [text])

            async def settled() -> bool:
                now = await status()
                return (removed not in now and now[running]["unacked_bytes"] == 0 and now[running]["delivery_lag_seconds"] == 0
                        and now[exited]["unacked_bytes"] == 0)

            await wait_until(settled, 60, what="nothing in flight after Loki is back")
            # The exited container's source has ended; its series keeps its label (no new series for rate()).
            samples = await scrape(proc.metrics_url)
            assert value(samples, "collector_lines_read_total", source="file", container_name=exited) == 1
            assert value(samples, "collector_lines_read_total", source="stopped", container_name=exited) is None
        finally:
            assert await proc.stop() == 0
