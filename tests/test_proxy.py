"""Step 9: the socket proxy config is read-only. The collector works through it with none of its calls
refused; anything that writes, copies files out, attaches or lists images is refused with 403."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urlsplit

import pytest
from dockerengine import IMAGE, DockerEngine
from harness import CollectorProcess
from socketproxy import SocketProxy, http_status

pytestmark = pytest.mark.docker

API = "/v1.41"  # Docker 20.10's API version; any version prefix is treated alike


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", "Connection: close", *headers]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
async def proxy(engine: DockerEngine):
    async with SocketProxy(engine) as running:
        yield running


def call_shape(uri: str) -> str:
    """/v1.41/containers/<64 hex>/json?x=1 -> /containers/{id}/json"""
    path = re.sub(r"^/v[0-9]+\.[0-9]+", "", urlsplit(uri).path)
    return re.sub(r"^/containers/[0-9a-f]{64}/", "/containers/{id}/", path)


async def test_the_collector_reads_through_the_proxy_and_none_of_its_calls_is_refused(proxy: SocketProxy, containers: DockerEngine) -> None:
    proc = await CollectorProcess(containers, env={"DOCKER_HOST": proxy.docker_host}).start()
    try:
        name = f"proxied-{time.monotonic_ns()}"
        containers.run("seq 1 50; sleep 300", name=name)
        # The `local` driver's logs come only from the Engine API's log stream.
        streamed = f"proxied-local-{time.monotonic_ns()}"
        containers.run("seq 1 20; sleep 300", "--log-driver", "local", name=streamed)
        assert await proc.wait_for_lines(name, 50) == [str(i) for i in range(1, 51)]
        assert await proc.wait_for_lines(streamed, 20) == [str(i) for i in range(1, 21)]
        assert proc.entries_of(name)[0]["labels"]["host"], "the host label comes from /info, through the proxy"
    finally:
        assert await proc.stop() == 0
    expected = {"/info", "/events", "/containers/json", "/containers/{id}/json", "/containers/{id}/logs"}
    calls = await proxy.logged(lambda calls: expected <= {call_shape(call.uri) for call in calls})
    assert [call for call in calls if call.status != 200] == []


async def test_reads_the_collector_makes_pass(proxy: SocketProxy, containers: DockerEngine) -> None:
    container_id = containers.run("echo hello; sleep 300")
    until = int(time.time())
    allowed = [
        request("GET", "/_ping"),
        request("HEAD", "/_ping"),
        request("GET", f"{API}/version"),
        request("GET", "/info"),
        request("GET", f"{API}/containers/json?all=1"),
        request("GET", f"/containers/{container_id}/json"),
        request("GET", f"{API}/containers/{container_id}/logs?stdout=1&stderr=1&timestamps=1"),
        request("GET", f"{API}/events?since=0&until={until}"),
    ]
    assert [await http_status(raw, port=proxy.port) for raw in allowed] == [200] * len(allowed)


async def test_everything_else_is_refused(proxy: SocketProxy, containers: DockerEngine) -> None:
    container_id = containers.run("sleep 300")
    short = container_id[:12]
    before = containers.docker("ps", "-aq", "--no-trunc").split()
    # Reads that copy a container's files out or reach beyond containers: the engine itself serves
    # each of them (checked below), so only the proxy stands in the way.
    engine_serves = [
        f"/containers/{container_id}/export",
        f"{API}/containers/{short}/export",
        f"/containers/{container_id}/archive?path=/bin",
        f"/containers/{container_id}/top",
        f"/containers/{container_id}/changes",
        "/images/json",
        "/volumes",
        "/networks",
        "/system/df",
    ]
    for target in engine_serves:
        assert await http_status(request("GET", target), unix_path=proxy.engine_socket) == 200, target
    create = json.dumps({"Image": IMAGE, "Cmd": ["true"]}).encode()
    refused = [
        *(request("GET", target) for target in engine_serves),
        request("HEAD", f"/containers/{container_id}/export"),
        request("POST", "/containers/create", body=create),
        request("POST", f"{API}/containers/create?name=sneaky", body=create),
        request("POST", f"/containers/{container_id}/exec", body=json.dumps({"Cmd": ["true"]}).encode()),
        request("GET", "/exec/0123456789abcdef/json"),
        request("POST", f"/containers/{container_id}/kill"),
        request("DELETE", f"/containers/{container_id}?force=1"),
        request("PUT", f"/containers/{container_id}/archive?path=/tmp", body=b"{}"),
        request("GET", f"/containers/{container_id}/attach/ws?stdin=1&stream=1",
                "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
        request("POST", f"/containers/{container_id}/attach?stream=1&stdin=1", "Upgrade: tcp", "Connection: Upgrade"),
        # An allowed path does not make a protocol switch allowed.
        request("GET", f"/containers/{container_id}/logs?follow=1", "Upgrade: tcp", "Connection: Upgrade"),
        # Paths that only look like allowed ones.
        request("GET", f"/containers/{container_id}/json/../export"),
        request("GET", "/containers/json/../../images/json"),
        request("GET", f"//containers/{container_id}/export"),
        request("GET", f"/containers/{container_id}%2Fexport"),
        request("GET", f"/containers/{container_id}/export?x=/json"),
        request("GET", f"/v1.41/v1.41/containers/{container_id}/export"),
    ]
    statuses = [await http_status(raw, port=proxy.port) for raw in refused]
    assert statuses == [403] * len(refused), [raw.split(b"\r\n")[0] for raw, status in zip(refused, statuses, strict=True) if status != 403]
    # Nothing got through: no container was created, the running one is still there and untouched.
    assert containers.docker("ps", "-aq", "--no-trunc").split() == before
    assert containers.inspect(container_id)["State"]["Running"] is True
    calls = await proxy.logged(lambda calls: len(calls) >= len(refused))
    assert [call.status for call in calls] == [403] * len(refused)
