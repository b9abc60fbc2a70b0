"""A log stream's body is read from its socket in gathered pieces (collector/docker/logbody.py):
dockerd flushes each record on its own, and reading each as it arrives costs a wake-up and a
socket read per line. A real aiohttp connection to a server that writes and flushes one record at
a time: every byte arrives, in far fewer reads than writes, and the socket is not read between reads."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from collector.docker.logbody import LogBody

RECORDS = 3000
RECORD = b"\x01\x00\x00\x00\x00\x00\x00\x2a" + b"2026-11-22T12:00:00.000000000Z " + b"x" * 10 + b"\n"


async def _serve_records(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.force_close()  # as dockerd answers HTTP/1.0: the body ends with the connection
    await response.prepare(request)
    for _ in range(RECORDS):
        await response.write(RECORD)  # one flush per record, as dockerd does
        await asyncio.sleep(0)
    await response.write_eof()
    return response


async def test_a_stream_of_flushed_records_is_read_whole_in_gathered_pieces() -> None:
    app = web.Application()
    app.router.add_get("/logs", _serve_records)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(version=aiohttp.HttpVersion10) as session, \
                session.get(f"http://{host}:{port}/logs") as response:
            body = LogBody(response)
            received = bytearray()
            reads = 0
            reading_between_reads = []
            while data := await body.read(256 * 1024):
                received += data
                reads += 1
                connection = response.connection
                if connection is not None and connection.transport is not None:
                    reading_between_reads.append(connection.transport.is_reading())
                await asyncio.sleep(0)  # the parse of what was read: the server goes on writing meanwhile
    finally:
        await runner.cleanup()
    assert bytes(received) == RECORD * RECORDS
    assert reads <= RECORDS // 10, f"{reads} reads for {RECORDS} flushed records"
    assert reading_between_reads and not any(reading_between_reads)
