"""Secrets set in the config (the URL's password, a bearer token, an Authorization header) never
reach what an operator or a scraper sees: check-config, config errors, the transport's error texts
and answers (which end in logs, /ready and /status), and a running collector's log, /ready and
/status while Loki is unreachable and then refusing with 401."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aiohttp
import pytest
from aiohttp import web
from dockerengine import DockerEngine
from harness import REPO, CollectorProcess
from polling import wait_until

from collector.config import LokiConfig, load_config, masked
from collector.sinks.transport import AiohttpTransport, Unreachable

PASSWORD = "pw-Secr3t-9f2c"
TOKEN = "tok-Secr3t-41aa"
HEADER = "hdr-Secr3t-77b0"
SECRETS = (PASSWORD, TOKEN, HEADER)


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}: {text[:2000]}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- check-config and config errors ---------------------------------------------------------------
CONFIGS = {
    "basic": f"""
loki:
  url: http://collector:{PASSWORD}@127.0.0.1:9/loki/api/v1/push
  headers:
    X-Api-Key: {HEADER}
    X-Scope-OrgID: team-a
""",
    "header": f"""
loki:
  url: http://127.0.0.1:9/loki/api/v1/push
  headers:
    Authorization: Bearer {HEADER}
""",
    "bearer": f"""
loki:
  url: https://127.0.0.1:9/loki/api/v1/push
  bearer_token: {TOKEN}
  headers:
    X-Api-Key: {HEADER}
""",
    "password": f"""
loki:
  url: http://127.0.0.1:9/loki/api/v1/push
  username: collector
  password: {PASSWORD}
  headers:
    Cookie: session={HEADER}
""",
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_check_config_prints_no_secret(tmp_path, case: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIGS[case] + f"positions:\n  path: {tmp_path}/positions.json\n")
    result = subprocess.run([sys.executable, "-m", "collector", "--config", str(path), "check-config"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=60)
    assert "loki:" in result.stdout, result.stderr
    assert_clean(result.stdout, "check-config stdout")
    assert_clean(result.stderr, "check-config stderr")
    if case == "basic":
        assert "http://collector:***@127.0.0.1:9/loki/api/v1/push" in result.stdout
        assert "team-a" in result.stdout  # a tenant header is no secret


def test_masked_config_hides_url_password_and_credential_headers() -> None:
    config = load_config(None, {"COLLECTOR_LOKI__URL": f"http://u:{PASSWORD}@loki:3100/loki/api/v1/push",
                                "COLLECTOR_LOKI__HEADERS": f'{{"X-Api-Key": "{HEADER}", "X-Scope-OrgID": "t1"}}'})
    shown = masked(config)["loki"]
    assert shown["url"] == "http://u:***@loki:3100/loki/api/v1/push"
    assert shown["headers"] == {"X-Api-Key": "***", "X-Scope-OrgID": "t1"}
    with_header = masked(load_config(None, {"COLLECTOR_LOKI__HEADERS": f'{{"Authorization": "Basic {HEADER}"}}'}))["loki"]
    assert with_header["headers"] == {"Authorization": "***"}


@pytest.mark.parametrize("env", [
    {"COLLECTOR_LOKI__URL": f"http://u:{PASSWORD}@loki/push", "COLLECTOR_LOKI__HEADERS": f'{{"Authorization": "Bearer {HEADER}"}}'},
    {"COLLECTOR_LOKI__URL": f"http://u:{PASSWORD}@loki/push", "COLLECTOR_LOKI__USERNAME": "u"},
    {"COLLECTOR_LOKI__URL": "http://loki/push", "COLLECTOR_LOKI__BEARER_TOKEN": TOKEN, "COLLECTOR_LOKI__HEADERS": '{"authorization": "x"}'},
])
def test_two_ways_to_authenticate_are_a_config_error_not_a_crash_at_the_first_push(env: dict[str, str]) -> None:
    from collector.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_config(None, env)
    assert "exclusive" in str(caught.value)
    assert_clean(str(caught.value), "the config error")


def test_a_config_error_about_the_url_does_not_print_its_password(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"loki:\n  url: ftp://collector:{PASSWORD}@loki/push\n")
    result = subprocess.run([sys.executable, "-m", "collector", "--config", str(path), "check-config"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=60)
    assert result.returncode == 2 and "loki.url" in result.stderr
    assert_clean(result.stdout + result.stderr, "a config error")


# -- the transport's texts -----------------------------------------------------------------------
async def echo_401_server() -> tuple[web.AppRunner, int]:
    """A gateway that refuses, echoing the credentials it got (some do, in their error page)."""

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=401, text=f"bad credentials {request.headers.get('Authorization', '')} "
                                             f"{request.headers.get('X-Api-Key', '')} for {request.url}")

    app = web.Application()
    app.router.add_post("/loki/api/v1/push", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def test_transport_texts_carry_no_secret() -> None:
    port = free_port()  # nothing listens: connection refused
    refused = AiohttpTransport(LokiConfig(url=f"http://collector:{PASSWORD}@127.0.0.1:{port}/loki/api/v1/push",
                                          headers={"X-Api-Key": HEADER}, timeout=2))
    with pytest.raises(Unreachable) as caught:
        await refused.post(b"x", {"Content-Type": "application/x-protobuf"})
    await refused.close()
    assert_clean(str(caught.value), "connection refused")

    # Accepts and never answers: the timeout's text names the URL.
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    hanging = AiohttpTransport(LokiConfig(url=f"http://collector:{PASSWORD}@127.0.0.1:{silent_port}/loki/api/v1/push", timeout=0.5))
    with pytest.raises(Unreachable) as caught:
        await hanging.post(b"x", {"Content-Type": "application/x-protobuf"})
    await hanging.close()
    silent.close()
    assert "127.0.0.1" in str(caught.value)
    assert_clean(str(caught.value), "no answer")

    runner, echo_port = await echo_401_server()
    try:
        for config in (LokiConfig(url=f"http://collector:{PASSWORD}@127.0.0.1:{echo_port}/loki/api/v1/push"),
                       LokiConfig(url=f"http://127.0.0.1:{echo_port}/loki/api/v1/push", bearer_token=TOKEN, headers={"X-Api-Key": HEADER}),
                       LokiConfig(url=f"http://127.0.0.1:{echo_port}/loki/api/v1/push", username="u", password=PASSWORD)):
            transport = AiohttpTransport(config)
            reply = await transport.post(b"x", {"Content-Type": "application/x-protobuf"})
            await transport.close()
            assert reply.status == 401 and "bad credentials" in reply.body
            assert_clean(reply.body, "a 401's body")
            assert "dXw6" not in reply.body  # base64 of "u:" + the password: the Basic header's value
    finally:
        await runner.cleanup()


# -- a running collector ---------------------------------------------------------------------------
async def _get_text(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return await response.text()


async def _outputs_of_a_failing_run(engine: DockerEngine, url: str, env: dict[str, str]) -> list[tuple[str, str]]:
    """Run the collector against `url` until /ready names the sink; what it showed on every channel."""
    proc = await CollectorProcess(engine, env={
        "COLLECTOR_LOKI__URL": url, "COLLECTOR_METRICS__LISTEN": "127.0.0.1:0", "COLLECTOR_LOKI__NOT_READY_AFTER": "1s",
        "COLLECTOR_LOKI__MIN_BACKOFF": "0.1s", "COLLECTOR_LOKI__MAX_BACKOFF": "0.5s", "COLLECTOR_LOG__LEVEL": "debug", **env,
    }).start()
    outputs: list[tuple[str, str]] = []
    try:
        await wait_until(lambda: any("push failed" in line or "Loki refuses" in line for line in proc.stderr), 30,
                         what=lambda: f"a failed push logged: {proc.stderr[-10:]}")
        deadline = time.monotonic() + 30
        while True:
            ready_text = await _get_text(f"{proc.metrics_url}/ready")
            if '"ready": false' in ready_text and "Loki" in ready_text:
                break
            assert time.monotonic() < deadline, f"/ready never named the sink: {ready_text}"
            await asyncio.sleep(0.3)
        outputs += [("/ready", ready_text), ("/status", await _get_text(f"{proc.metrics_url}/status")),
                    ("/metrics", await _get_text(f"{proc.metrics_url}/metrics"))]
    finally:
        await proc.stop()
    outputs.append((f"the log of a run against {url.split('@')[-1]}", "\n".join(proc.stderr)))
    outputs.append(("stdout", "\n".join(str(entry) for entry in proc.entries)))
    return outputs


@pytest.mark.docker
async def test_a_running_collector_shows_no_secret_anywhere(containers: DockerEngine) -> None:
    runner, echo_port = await echo_401_server()
    down_port = free_port()
    name = f"secrets-{time.monotonic_ns()}"
    containers.run("i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done", name=name)
    outputs: list[tuple[str, str]] = []
    try:
        for url, env in (
            (f"http://collector:{PASSWORD}@127.0.0.1:{down_port}/loki/api/v1/push", {"COLLECTOR_LOKI__HEADERS": f'{{"X-Api-Key": "{HEADER}"}}'}),
            (f"http://collector:{PASSWORD}@127.0.0.1:{echo_port}/loki/api/v1/push", {}),
            (f"http://127.0.0.1:{echo_port}/loki/api/v1/push", {"COLLECTOR_LOKI__HEADERS": f'{{"Authorization": "Bearer {HEADER}"}}'}),
            (f"http://127.0.0.1:{echo_port}/loki/api/v1/push", {"COLLECTOR_LOKI__BEARER_TOKEN": TOKEN}),
        ):
            outputs += await _outputs_of_a_failing_run(containers, url, env)
    finally:
        await runner.cleanup()
    assert any("refused" in text or "cannot connect" in text for where, text in outputs if where == "/ready")
    assert any("401" in text for where, text in outputs if where == "/ready")
    for where, text in outputs:
        assert_clean(text, where)
