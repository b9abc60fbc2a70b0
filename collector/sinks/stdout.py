"""The default sink: one JSON object per entry on stdout, so the collector shows it works with no Loki."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import BinaryIO

import msgspec

from collector.pipeline.entry import Chunk
from collector.pipeline.queue import ChunkQueue, QueueClosed
from collector.sinks.base import Acknowledge
from collector.timefmt import rfc3339_nano

log = logging.getLogger(__name__)


class StdoutSink:
    def __init__(self, out: BinaryIO | None = None) -> None:
        self._out = out or sys.stdout.buffer
        self._encode = msgspec.json.Encoder().encode

    async def run(self, queue: ChunkQueue, acknowledge: Acknowledge) -> None:
        """Print until the queue is closed, or until stdout's reader has gone (`collector | head`):
        then return early; the supervisor takes that as a stop."""
        while True:
            try:
                chunks = [await queue.get()]
            except QueueClosed:
                return
            while (more := queue.get_nowait()) is not None:
                chunks.append(more)
            # In a thread: a slow reader of stdout must not stall the loop (sources keep reading
            # into the queue, and a removed container's stream is read before Docker ends it).
            written = await asyncio.to_thread(self._write, chunks)
            acknowledge(chunks[:written])
            if written < len(chunks):
                log.warning("stdout was closed by its reader; stopping (positions stay at what was written)",
                            extra={"unwritten_chunks": len(chunks) - written})
                self._silence_stdout()
                return

    def _write(self, chunks: list[Chunk]) -> int:
        """Write chunk by chunk; how many were written whole before the reader went away."""
        encode = self._encode
        for done, chunk in enumerate(chunks):
            lines: list[bytes] = []
            per_stream: dict[str, dict[str, str]] = {}
            for entry in chunk.entries:
                labels = per_stream.get(entry.stream)
                if labels is None:
                    labels = per_stream[entry.stream] = {**chunk.origin.labels, "stream": entry.stream}
                record = {"labels": labels, "ts_ns": entry.ts_ns, "time": rfc3339_nano(entry.ts_ns), "line": entry.line}
                if entry.attrs:
                    record["metadata"] = entry.attrs
                lines.append(encode(record))
            if not lines:
                continue
            lines.append(b"")
            try:
                self._out.write(b"\n".join(lines))
                self._out.flush()
            except BrokenPipeError:
                return done
        return len(chunks)

    def _silence_stdout(self) -> None:
        """Point fd 1 at /dev/null, so the interpreter's own flush of stdout at exit cannot raise
        BrokenPipeError again (Python's documented remedy for SIGPIPE)."""
        if self._out is sys.stdout.buffer:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
