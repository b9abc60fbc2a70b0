"""Step 6 on a real engine: events that never stall, a cut event stream, and the fallback to the API stream."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

import pytest
from cutproxy import CutProxy
from dockerengine import DockerEngine
from harness import REPO, CollectorProcess
from loki_receiver import LokiReceiver
from polling import wait_until
from scrape import get, scrape, value

pytestmark = pytest.mark.docker

METRICS = {"COLLECTOR_METRICS__LISTEN": "127.0.0.1:0"}


def tag() -> int:
    return time.monotonic_ns()


def docker_lines(engine: DockerEngine, name: str) -> list[str]:
    return [line for line in engine.docker("logs", name).splitlines() if line]


async def test_restarts_of_a_chatty_container_stall_nothing_and_lose_nothing(containers: DockerEngine) -> None:
    # Through Loki (the test receiver): the stdout sink's blocking pipe would make this test's own
    # reading speed part of the outcome.
    async with LokiReceiver() as receiver:
        proc = await CollectorProcess(containers, env={"COLLECTOR_LOKI__URL": receiver.push_url}).start()
        try:
            run_tag = tag()
            chatty = f"chatty-{run_tag}"

            def lines(name: str) -> list[str]:
                return receiver.lines({"container_name": name})

            containers.run("i=0; while true; do i=$((i+1)); echo \"c $i\"; [ $((i % 20)) -eq 0 ] && sleep 0.01; done", name=chatty)
            await wait_until(lambda: len(lines(chatty)) >= 500, 60, what="chatty lines")
            short_lived = []
            for round_no in range(3):
                await asyncio.to_thread(containers.docker, "restart", "-t", "0", chatty)
                # --rm containers right after the restart: their files are unlinked ~0.3 s after they
                # start, so the start event must be handled at once, not after the chatty one's drain.
                for index in range(3):
                    name = f"rm-{run_tag}-{round_no}-{index}"
                    short_lived.append(name)
                    containers.run(f"echo {name} a; echo {name} b", "--rm", name=name)
                await asyncio.sleep(0.5)
            for name in short_lived:
                await wait_until(lambda name=name: len(lines(name)) >= 2, 60, what=f"lines of {name}")
                assert lines(name) == [f"{name} a", f"{name} b"]
            await asyncio.to_thread(containers.docker, "kill", chatty)
            written = await asyncio.to_thread(docker_lines, containers, chatty)
            await wait_until(lambda: len(lines(chatty)) >= len(written), 60,
                             what=lambda: f"{len(written)} lines of {chatty} (have {len(lines(chatty))})")
            await asyncio.sleep(0.5)
            assert lines(chatty) == written  # once each, in order, across the restarts
        finally:
            assert await proc.stop() == 0


async def test_events_connection_cut_replays_the_gap_once(containers: DockerEngine, tmp_path) -> None:
    socket_path = containers.host.removeprefix("unix://")
    proxy = await CutProxy(str(tmp_path / "proxy.sock"), socket_path).start()
    proc = await CollectorProcess(containers, env={"DOCKER_HOST": proxy.host}).start()
    try:
        run_tag = tag()
        before = f"cut-before-{run_tag}"
        containers.run("echo before; sleep 300", name=before)
        await proc.wait_for_lines(before, 1)
        await proxy.cut()
        # Started (and some finished) while the collector cannot hear Docker.
        gap = [f"cut-gap-{run_tag}-{i}" for i in range(4)]
        for index, name in enumerate(gap):
            script = f"echo {name} 1; echo {name} 2" + ("; sleep 300" if index % 2 else "")
            opts = ("--log-driver", "local") if index >= 2 else ()
            containers.run(script, *opts, name=name)
        await asyncio.sleep(2.0)
        await proxy.start()
        await wait_until(lambda: sum("following docker events" in line for line in proc.stderr) >= 2, 60, what="reconnect")
        for name in gap:
            assert await proc.wait_for_lines(name, 2, timeout=60) == [f"{name} 1", f"{name} 2"]
        containers.run("echo after", name=f"cut-after-{run_tag}")
        await proc.wait_for_lines(f"cut-after-{run_tag}", 1)
        await asyncio.sleep(1.0)
        for name in gap:
            assert proc.lines_of(name) == [f"{name} 1", f"{name} 2"]  # the replay read nothing twice
        assert proc.lines_of(before) == ["before"]
        assert any('"replay_since":"' in line for line in proc.stderr)
    finally:
        assert await proc.stop() == 0
        await proxy.cut()


async def test_unreadable_log_file_falls_back_to_the_stream(containers: DockerEngine, tmp_path) -> None:
    empty = tmp_path / "containers"
    empty.mkdir()
    proc = await CollectorProcess(containers, env={**METRICS, "COLLECTOR_DOCKER__CONTAINERS_DIR": str(empty)}).start()
    try:
        name = f"fb-{tag()}"
        containers.run("echo via api 1; echo via api 2; sleep 300", name=name)
        assert await proc.wait_for_lines(name, 2) == ["via api 1", "via api 2"]
        samples = await scrape(proc.metrics_url)
        assert value(samples, "collector_fallbacks_total", reason="file_not_found") >= 1
        _, status = await get(f"{proc.metrics_url}/status")
        row = next(c for c in status["containers"] if c["name"] == name)
        assert row["mode"] == "stream" and row["reason"] == "fallback: file_not_found"
        code, ready = await get(f"{proc.metrics_url}/ready")
        assert code == 200, ready  # it delivers, so it is ready
        assert any("reading it through the Docker API instead" in line for line in proc.stderr)
    finally:
        assert await proc.stop() == 0


def _nobody_command(workdir: str) -> list[str]:
    """Run the collector as uid 65534 from copies it can read (the test's venv may sit under /root)."""
    site = sysconfig.get_paths()["purelib"]
    shutil.copytree(site, os.path.join(workdir, "site"), ignore=shutil.ignore_patterns("pip", "setuptools", "_pytest", "pygments"))
    shutil.copytree(os.path.join(REPO, "collector"), os.path.join(workdir, "collector"))
    subprocess.run(["chmod", "-R", "a+rX", workdir], check=True)
    # The test's own interpreter may sit where uid 65534 cannot reach it (pyenv under /root):
    # Debian's python3 of the same minor version reads the same wheels (.ci/run installs it).
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", f"PYTHONPATH={workdir}:{workdir}/site",
            python, "-m", "collector"]


async def test_non_root_collector_reads_everything_through_the_stream(containers: DockerEngine, tmp_path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    workdir = tempfile.mkdtemp(prefix="collector-nobody-", dir="/tmp")
    os.chmod(workdir, 0o755)
    state = os.path.join(workdir, "state")
    os.mkdir(state)
    os.chmod(state, 0o777)
    proxy = await CutProxy(os.path.join(workdir, "docker.sock"), containers.host.removeprefix("unix://")).start()
    try:
        command = await asyncio.to_thread(_nobody_command, workdir)
        proc = await CollectorProcess(containers, command=command, positions_path=os.path.join(state, "positions.json"),
                                      env={**METRICS, "DOCKER_HOST": proxy.host}).start()
        try:
            name = f"nobody-{tag()}"
            containers.run("echo as nobody 1; echo as nobody 2; sleep 300", name=name)
            assert await proc.wait_for_lines(name, 2) == ["as nobody 1", "as nobody 2"]
            _, status = await get(f"{proc.metrics_url}/status")
            row = next(c for c in status["containers"] if c["name"] == name)
            assert row["mode"] == "stream" and row["reason"].startswith("fallback: ")
            assert not status["files_readable"]
            samples = await scrape(proc.metrics_url)
            assert sum(v for (n, _), v in samples.items() if n == "collector_fallbacks_total") >= 1
            assert any("is not readable" in line and "Docker API" in line for line in proc.stderr)
        finally:
            assert await proc.stop() == 0
    finally:
        await proxy.cut()
        shutil.rmtree(workdir, ignore_errors=True)
