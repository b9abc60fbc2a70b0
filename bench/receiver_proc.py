"""The test suite's Loki receiver (tests/loki_receiver.py), in a process of its own, for bench/e2e.py.

    python bench/receiver_proc.py [--dump-file PATH] [--max-line-size BYTES] [--port PORT] [--fast]

Prints one JSON line on stdout once listening: {"push_url": ..., "control_url": ..., "pid": ...}.
The push endpoint is LokiReceiver's, with its full decoding and validation. Every accepted entry is
reduced at once to (container_name, ts_ns, received_at, seq), seq being the line's second
whitespace-separated token as an int (-1 if it is not one), so hundreds of thousands of entries
fit in memory. A second HTTP site on another port is the control channel:

    GET  /stats                  counts so far (cheap; the driver polls it)
    POST /dump?path=P&clear=1    write everything to P as JSON (atomically), optionally forget it

On SIGTERM/SIGINT it writes the same JSON to --dump-file (if given) and exits.

--fast: snappy protobuf pushes are decoded by Google's protobuf runtime (C) and not validated
(~30 -> ~2 µs per entry), so rates like 50k lines/s measure the collector, not this receiver; other
bodies, and scripted faults, still take the full path. The tests' receiver does the validating.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from typing import Any

from aiohttp import web

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from loki_receiver import LokiReceiver, RequestRecord  # noqa: E402

_CONTAINER_NAME = re.compile(r'container_name="([^"\\]*)"')


class _Columns:
    __slots__ = ("ts", "recv", "seq", "malformed")

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.recv: list[float] = []
        self.seq: list[int] = []
        self.malformed = 0  # lines whose first token is not the container's name

    def add(self, name: str, line: str, ts_ns: int, received_at: float) -> None:
        """One entry of container `name`: its line is "<name> <seq> ..."."""
        parts = line.split(" ", 2)
        try:
            seq = int(parts[1])
        except (IndexError, ValueError):
            seq = -1
        if parts[0] != name:
            self.malformed += 1
        self.ts.append(ts_ns)
        self.recv.append(received_at)
        self.seq.append(seq)


class BenchReceiver(LokiReceiver):
    """LokiReceiver that keeps only what the benchmark needs of each accepted entry."""

    def __init__(self, fast: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast = fast
        if fast:
            import cramjam
            from lokipb import push_request_class

            self._decompress, self._push_request = cramjam.snappy.decompress_raw, push_request_class()
        self.by_container: dict[str, _Columns] = {}
        self.total_entries = 0
        self.last_received_at = 0.0

    async def _respond(self, request: web.Request, rec: RequestRecord, body: bytes) -> web.Response | None:
        if (not self.fast or self.down or self.faults or rec.content_encoding
                or rec.content_type != "application/x-protobuf"):
            return await super()._respond(request, rec, body)
        push = self._push_request.FromString(bytes(self._decompress(body)))
        for stream in push.streams:
            match = _CONTAINER_NAME.search(stream.labels)
            name = match.group(1) if match else ""
            cols = self.by_container.get(name)
            if cols is None:
                cols = self.by_container[name] = _Columns()
            for entry in stream.entries:
                cols.add(name, entry.line, entry.timestamp.seconds * 1_000_000_000 + entry.timestamp.nanos, rec.received_at)
            rec.accepted += len(stream.entries)
        self.total_entries += rec.accepted
        self.last_received_at = max(self.last_received_at, rec.received_at)
        return web.Response(status=204)

    def _ingest(self, streams, rec: RequestRecord):  # type: ignore[override]
        response = super()._ingest(streams, rec)
        self._reduce()
        return response

    def _reduce(self) -> None:
        for entry in self.received:
            name = entry.labels.get("container_name", "")
            cols = self.by_container.get(name)
            if cols is None:
                cols = self.by_container[name] = _Columns()
            cols.add(name, entry.line, entry.ts_ns, entry.received_at)
            if entry.received_at > self.last_received_at:
                self.last_received_at = entry.received_at
        self.total_entries += len(self.received)
        self.received.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "entries": self.total_entries,
            "by_container": {name: len(cols.ts) for name, cols in self.by_container.items()},
            "requests": len(self.requests),
            "statuses": {str(k): v for k, v in Counter(self.statuses()).items()},
            "rejected": dict(self.rejected_by_reason),
            "last_received_at": self.last_received_at,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.stats(),
            "containers": {
                name: {"ts_ns": cols.ts, "received_at": cols.recv, "seq": cols.seq, "malformed": cols.malformed}
                for name, cols in self.by_container.items()
            },
            # Per push request: arrival (wall clock), body bytes, accepted entries, handler seconds, status.
            "pushes": [(r.received_at, r.body_size, r.accepted, r.duration_s, r.status) for r in self.requests],
            "counters": dict(self.counters),
            "unsorted_label_strings": self.unsorted_label_strings,
            "noncanonical_label_strings": self.noncanonical_label_strings,
        }

    def forget(self) -> None:
        self.clear()
        self.by_container.clear()
        self.total_entries = 0
        self.last_received_at = 0.0


def _dump(receiver: BenchReceiver, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(receiver.snapshot(), handle, separators=(",", ":"))
    os.replace(tmp, path)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump-file", default="")
    parser.add_argument("--max-line-size", type=int, default=262144)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="of the push endpoint (0: any free one)")
    parser.add_argument("--fast", action="store_true", help="decode protobuf pushes in C, without validation")
    args = parser.parse_args()

    receiver = BenchReceiver(fast=args.fast, max_line_size=args.max_line_size, client_max_size=256 * 1024 * 1024)
    base = await receiver.start(args.host, args.port)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({**receiver.stats(), "now": time.time()})

    async def dump(request: web.Request) -> web.Response:
        path = request.query.get("path", "")
        if not path:
            return web.json_response({"error": "path missing"}, status=400)
        _dump(receiver, path)
        if request.query.get("clear") in ("1", "true"):
            receiver.forget()
        return web.json_response({"ok": True, "path": path})

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/dump", dump)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, 0)
    await site.start()
    control_host, control_port = runner.addresses[0][:2]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    print(json.dumps({
        "push_url": receiver.push_url,
        "base_url": base,
        "control_url": f"http://{control_host}:{control_port}",
        "pid": os.getpid(),
    }), flush=True)

    await stop.wait()
    if args.dump_file:
        _dump(receiver, args.dump_file)
    await runner.cleanup()
    await receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
