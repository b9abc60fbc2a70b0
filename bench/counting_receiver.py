"""A fast Loki push endpoint for the CPU benchmarks: decompress and count, nothing else.

    python bench/counting_receiver.py [--unavailable] [--delay-ms N]

Prints one JSON line once listening: {"push_url": ..., "stats_url": ..., "available_url": ...}.
Every push is answered 204 after its body is decompressed (snappy for protobuf, gzip when so
encoded) and its entries are counted (a walk over the protobuf fields, or a JSON decode); GET
/stats returns the counts. With --unavailable it answers 503 (Loki down; counted as `refused`)
until POST /available (bench/spool.py: the backlog goes to the collector's spool first). It runs
in a process of its own, so none of this is charged to the collector. --delay-ms (or the
environment's BENCH_RECEIVER_DELAY_MS) answers each push that much later, as a slower Loki would:
what a sender buffers meanwhile shows in its RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import signal

import cramjam
import msgspec
from aiohttp import web


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def count_protobuf_entries(body: bytes) -> int:
    """PushRequest.streams (1) -> StreamAdapter.entries (2): count without decoding them."""
    entries = 0
    pos, end = 0, len(body)
    while pos < end:
        _, pos = _varint(body, pos)  # tag 0x0a: a stream
        length, pos = _varint(body, pos)
        stream_end = pos + length
        while pos < stream_end:
            tag, pos = _varint(body, pos)
            if tag & 7 == 2:
                size, pos = _varint(body, pos)
                if tag >> 3 == 2:
                    entries += 1
                pos += size
            else:
                _, pos = _varint(body, pos)
    return entries


class Counts:
    def __init__(self) -> None:
        self.pushes = 0
        self.entries = 0
        self.wire_bytes = 0
        self.raw_bytes = 0
        self.refused = 0


async def main(unavailable: bool, delay_s: float) -> None:
    counts = Counts()
    down = asyncio.Event()
    if unavailable:
        down.set()

    async def push(request: web.Request) -> web.Response:
        body = await request.read()
        if down.is_set():
            counts.refused += 1
            return web.Response(status=503, text="unavailable (bench)")
        counts.wire_bytes += len(body)
        if request.content_type == "application/x-protobuf":
            raw = bytes(cramjam.snappy.decompress_raw(body))
            counts.entries += count_protobuf_entries(raw)
        else:
            # aiohttp already inflates a gzip request body; inflate here only if it did not.
            raw = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
            counts.entries += sum(len(stream["values"]) for stream in msgspec.json.decode(raw)["streams"])
        counts.raw_bytes += len(raw)
        counts.pushes += 1
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(vars(counts))

    async def available(request: web.Request) -> web.Response:
        down.clear()
        return web.Response(status=204)

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/loki/api/v1/push", push)
    app.router.add_get("/stats", stats)
    app.router.add_post("/available", available)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps({"push_url": f"http://127.0.0.1:{port}/loki/api/v1/push", "stats_url": f"http://127.0.0.1:{port}/stats",
                      "available_url": f"http://127.0.0.1:{port}/available"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unavailable", action="store_true", help="answer 503 until POST /available")
    parser.add_argument("--delay-ms", type=float, default=float(os.environ.get("BENCH_RECEIVER_DELAY_MS") or 0),
                        help="answer each push this much later (default: $BENCH_RECEIVER_DELAY_MS or 0)")
    args = parser.parse_args()
    asyncio.run(main(args.unavailable, args.delay_ms / 1000))
