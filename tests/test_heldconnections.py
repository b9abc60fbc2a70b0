"""Connections counted through aiohttp's public API: the log-stream client against a local HTTP
server that answers like dockerd's logs endpoint (no Docker), and the metrics server's bound port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from collector.docker.logstream import LogStreamClient, LogsUnavailable
from collector.metrics import Observability


@pytest.fixture
async def dockerd_logs() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """tcp://host:port of a server whose `/containers/follow/logs` streams until `finish` is set,
    `/containers/done/logs` answers at once and any other id is 404."""
    finish = asyncio.Event()

    async def logs(request: web.Request) -> web.StreamResponse:
        name = request.match_info["id"]
        if name not in ("follow", "done"):
            return web.json_response({"message": f"No such container: {name}"}, status=404)
        response = web.StreamResponse()
        response.force_close()  # as dockerd does over HTTP/1.0: the stream ends with its connection
        await response.prepare(request)
        await response.write(b"first\n")
        if name == "follow":
            await finish.wait()
        await response.write_eof()
        return response

    app = web.Application()
    app.add_routes([web.get("/containers/{id}/logs", logs)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"tcp://127.0.0.1:{runner.addresses[0][1]}", finish
    finally:
        finish.set()
        await runner.cleanup()


async def test_a_response_holds_its_connection_until_closed_or_read_to_the_end(dockerd_logs) -> None:
    host, finish = dockerd_logs
    client = LogStreamClient(host)
    try:
        assert client.open_connections == 0
        following = await client.connect("follow", "0")
        assert (await following.content.readline()) == b"first\n"
        assert client.open_connections == 1
        async with client.open("done", "0") as body:
            assert client.open_connections == 2
            assert (await body.read()) == b"first\n"  # to its end: the connection goes with it
        assert client.open_connections == 1
        following.close()
        assert client.open_connections == 0

        with pytest.raises(LogsUnavailable) as refused:
            await client.connect("gone", "0")
        assert refused.value.status == 404 and client.open_connections == 0
    finally:
        finish.set()
        await client.close()


async def test_the_metrics_server_reports_the_port_it_bound() -> None:
    observability = Observability(app=None)  # type: ignore[arg-type]  # serving needs no pipeline
    await observability.start("127.0.0.1:0")
    task = asyncio.create_task(observability.run("127.0.0.1:0"))
    try:
        assert observability.port
        reader, writer = await asyncio.open_connection("127.0.0.1", observability.port)
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert (await reader.readline()).split()[1] == b"200"
        writer.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
