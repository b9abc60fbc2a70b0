"""Step 9: the image is built from the Dockerfile and run as docker-compose.yml runs it (mounts,
capabilities, read-only root), reaching Docker through the proxy config; it delivers a container's
lines to Loki and its HEALTHCHECK turns healthy. Plus `collector health`, the HEALTHCHECK's command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp
import harness
import pytest
import yaml
from dockerengine import DockerEngine
from harness import REPO, CollectorProcess
from imagebuild import IMAGE, build_image, import_base
from loki_receiver import LokiReceiver
from polling import wait_until
from scrape import scrape, value
from socketproxy import SocketProxy, free_port
from test_compose import COMPOSE

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image(engine: DockerEngine) -> str:
    assert harness.SCRATCH
    import_base(engine, harness.SCRATCH)
    build_image(engine)
    return IMAGE


def compose_run_args(service: dict[str, Any], mounts: dict[str, str]) -> list[str]:
    """`docker run` options for what a compose service sets about privileges and mounts. Every mount
    source must be mapped for this engine: a mount added to the compose file fails here until it is."""
    args: list[str] = []
    for cap in service.get("cap_drop", []):
        args += ["--cap-drop", cap]
    for cap in service.get("cap_add", []):
        args += ["--cap-add", cap]
    for option in service.get("security_opt", []):
        args += ["--security-opt", option]
    if service.get("read_only"):
        args.append("--read-only")
    if "user" in service:
        args += ["--user", str(service["user"])]
    for path in service.get("tmpfs", []):
        args += ["--tmpfs", path]
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        args += ["-v", ":".join([mounts[source], target, *mode])]
    return args


def process_status(engine: DockerEngine, container: str) -> dict[str, str]:
    status = engine.docker("exec", container, "cat", "/proc/1/status")
    return dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)


async def test_the_image_runs_as_compose_runs_it_and_delivers_through_the_proxy(image: str, containers: DockerEngine) -> None:
    service = yaml.safe_load(open(COMPOSE))["services"]["collector"]
    volume = f"collector-positions-{uuid.uuid4().hex[:8]}"
    name = f"collector-img-{uuid.uuid4().hex[:8]}"
    metrics_port = free_port()
    async with SocketProxy(containers) as proxy, LokiReceiver() as receiver:
        environment = {
            **service["environment"],
            # The compose network's names, as this engine reaches them: it has no bridge, so the
            # collector shares the host's network and finds the proxy and Loki on 127.0.0.1.
            "DOCKER_HOST": proxy.docker_host,
            "COLLECTOR_LOKI__URL": receiver.push_url,
            "COLLECTOR_METRICS__LISTEN": f"127.0.0.1:{metrics_port}",
        }
        args = compose_run_args(service, {"/var/lib/docker/containers": containers.containers_dir, "collector-positions": volume})
        containers._names.append(name)
        try:
            containers.docker("run", "-d", "--name", name, "--network", "host", "--health-interval", "1s",
                              *args, *(f"--env={key}={val}" for key, val in environment.items()), image)
            logged = f"logged-{time.monotonic_ns()}"
            logged_id = containers.run("for i in $(seq 1 100); do echo line $i; done; echo oops >&2; sleep 300", name=logged)
            streamed = f"streamed-{time.monotonic_ns()}"
            containers.run("seq 1 30; sleep 300", "--log-driver", "local", name=streamed)
            expected = [f"line {i}" for i in range(1, 101)] + ["oops"]
            await receiver.wait_for(lambda: sorted(receiver.lines({"container_name": logged})) == sorted(expected), 90)
            # A driver only the Engine API's log stream gives back, through the proxy too.
            await receiver.wait_for(lambda: receiver.lines({"container_name": streamed}) == [str(i) for i in range(1, 31)], 90)
            entry = receiver.entries({"container_name": logged, "stream": "stderr"})[0]
            assert entry.labels["host"] and entry.metadata["container_id"] == logged_id

            def health() -> str:
                return containers.inspect(name)["State"].get("Health", {}).get("Status", "")

            await wait_until(lambda: health() == "healthy", 90, what=lambda: f"HEALTHCHECK healthy (is {health()!r}; log: {containers.docker('logs', '--tail', '5', name)})")

            # Root, with no capability at all and no way to gain one; the root filesystem is read-only.
            status = process_status(containers, name)
            assert status["Uid"].split()[0] == "0"
            assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapBnd"], 16) == 0
            assert status["NoNewPrivs"].strip() == "1"
            write = subprocess.run(["docker", "exec", name, "touch", "/written"], env=containers.env, capture_output=True, text=True)
            assert write.returncode != 0 and "Read-only file system" in write.stderr

            # It skipped its own log, and keeps positions on the named volume.
            samples = await scrape(f"http://127.0.0.1:{metrics_port}")
            assert value(samples, "collector_containers_skipped_total", reason="self") == 1
            assert receiver.lines({"container_name": name}) == []
            # ... because it found its own id, which its startup line names.
            own_logs = subprocess.run(["docker", "logs", name], env=containers.env, capture_output=True, text=True).stderr
            assert f'"own_container":"{containers.inspect(name)["Id"][:12]}"' in own_logs

            async def checkpointed() -> bool:
                positions = subprocess.run(["docker", "exec", name, "cat", "/var/lib/collector/positions.json"],
                                           env=containers.env, capture_output=True, text=True)
                return logged_id in positions.stdout

            await wait_until(checkpointed, 30, what="positions of the logged container on the volume")

            containers.docker("stop", "-t", "30", name, timeout=60)
            assert containers.inspect(name)["State"]["ExitCode"] == 0
        finally:
            containers.rm(name)
            containers.docker("volume", "rm", "-f", volume, check=False)
    calls = await proxy.logged(bool)
    assert [call for call in calls if call.status != 200] == []


def test_the_image_has_the_entrypoint_healthcheck_and_no_anonymous_volume(image: str, engine: DockerEngine) -> None:
    config = json.loads(engine.docker("image", "inspect", image))[0]["Config"]
    assert config["Entrypoint"] == ["collector"]
    assert config["Healthcheck"]["Test"] == ["CMD", "collector", "health"]
    assert not config.get("Volumes"), "positions live on a named volume in compose, not an anonymous VOLUME"
    assert config.get("User", "") in ("", "root", "0")


def test_the_image_carries_the_compiled_accelerator_and_no_compiler(image: str, engine: DockerEngine) -> None:
    # The build stage compiles collector/_speedups.c; the final stage has its result, not gcc.
    probe = ("import shutil; from collector.speedups import speedups; "
             "print(speedups is not None, shutil.which('gcc') is None)")
    out = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "/opt/collector/bin/python", image, "-c", probe)
    assert out.split() == ["True", "True"]


def health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "health", *args], cwd=REPO, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": REPO, **(env or {})})


async def test_collector_health_follows_healthz(containers: DockerEngine) -> None:
    port = free_port()
    proc = await CollectorProcess(containers, env={"COLLECTOR_METRICS__LISTEN": f"127.0.0.1:{port}"}).start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{proc.metrics_url}/healthz") as response:
            assert response.status == 200
        # The address comes from metrics.listen, as in the image; or from --url.
        assert health(env={"COLLECTOR_METRICS__LISTEN": f"0.0.0.0:{port}"}).returncode == 0
        assert health("--url", proc.metrics_url).returncode == 0
        # A hung process answers nothing: unhealthy once the request times out.
        assert proc.process is not None
        proc.process.send_signal(signal.SIGSTOP)
        try:
            stalled = health("--url", proc.metrics_url)
        finally:
            proc.process.send_signal(signal.SIGCONT)
        assert stalled.returncode == 1 and "unhealthy" in stalled.stderr
    finally:
        assert await proc.stop() == 0
    # Nothing listening: unhealthy, not a crash.
    gone = health("--url", f"http://127.0.0.1:{free_port()}")
    assert gone.returncode == 1 and "unhealthy" in gone.stderr
