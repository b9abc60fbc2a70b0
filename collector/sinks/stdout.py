"""The default sink: one JSON object per entry on stdout, so the collector shows it works with no Loki."""

from __future__ import annotations

import asyncio
import sys
from typing import BinaryIO

import msgspec

from collector.pipeline.entry import Chunk
from collector.pipeline.queue import ChunkQueue, QueueClosed
from collector.sinks.base import Acknowledge
from collector.timefmt import rfc3339_nano


class StdoutSink:
    def __init__(self, out: BinaryIO | None = None) -> None:
        self._out = out or sys.stdout.buffer
        self._encode = msgspec.json.Encoder().encode

    async def run(self, queue: ChunkQueue, acknowledge: Acknowledge) -> None:
        while True:
            try:
                chunks = [await queue.get()]
            except QueueClosed:
                return
            while (more := queue.get_nowait()) is not None:
                chunks.append(more)
            # In a thread: a slow reader of stdout must not stall the loop (sources keep reading
            # into the queue, and a removed container's stream is read before Docker ends it).
            await asyncio.to_thread(self._write, chunks)
            acknowledge(chunks)

    def _write(self, chunks: list[Chunk]) -> None:
        encode = self._encode
        lines: list[bytes] = []
        for chunk in chunks:
            per_stream: dict[str, dict[str, str]] = {}
            for entry in chunk.entries:
                labels = per_stream.get(entry.stream)
                if labels is None:
                    labels = per_stream[entry.stream] = {**chunk.origin.labels, "stream": entry.stream}
                record = {"labels": labels, "ts_ns": entry.ts_ns, "time": rfc3339_nano(entry.ts_ns), "line": entry.line}
                if entry.attrs:
                    record["metadata"] = entry.attrs
                lines.append(encode(record))
        if lines:
            lines.append(b"")
            self._out.write(b"\n".join(lines))
            self._out.flush()
