"""The default sink: one JSON object per entry on stdout, so the collector shows it works with no Loki."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import stat
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
        self._watched: int | None = None  # stdout's fd while its reader is watched

    async def run(self, queue: ChunkQueue, acknowledge: Acknowledge) -> None:
        """Print until the queue is closed, or until stdout's reader has gone (`collector | head`):
        then return early; the supervisor takes that as a stop. A reader that leaves while nothing
        is printed is noticed too (a pipe's write end reports an error once its last reader closed)."""
        gone = self._watch_reader()
        try:
            while True:
                first = await self._next(queue, gone)
                if first is None:
                    if gone is not None and gone.done():
                        self._stop_reader_gone(0)
                    return
                chunks = [first]
                while (more := queue.get_nowait()) is not None:
                    chunks.append(more)
                # In a thread: a slow reader of stdout must not stall the loop (sources keep reading
                # into the queue, and a removed container's stream is read before Docker ends it).
                written = await asyncio.to_thread(self._write, chunks)
                acknowledge(chunks[:written])
                if written < len(chunks):
                    self._stop_reader_gone(len(chunks) - written)
                    return
        finally:
            self._unwatch_reader()

    async def _next(self, queue: ChunkQueue, gone: asyncio.Future[None] | None) -> Chunk | None:
        """The next chunk; None once the queue is closed and drained, or stdout's reader has gone."""
        if (ready := queue.get_nowait()) is not None:
            return ready
        if gone is None:
            try:
                return await queue.get()
            except QueueClosed:
                return None
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait((getter, gone), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            getter.cancel()
            raise
        if not getter.done():  # the reader has gone while nothing was queued
            getter.cancel()  # ChunkQueue.get is cancel-safe: nothing is taken
            return None
        try:
            return getter.result()
        except QueueClosed:
            return None

    def _stop_reader_gone(self, unwritten: int) -> None:
        log.warning("stdout was closed by its reader; stopping (positions stay at what was written)",
                    extra={"unwritten_chunks": unwritten})
        self._unwatch_reader()  # before fd 1 is pointed elsewhere
        self._silence_stdout()

    def _watch_reader(self) -> asyncio.Future[None] | None:
        """A future that completes when the pipe behind stdout loses its last reader; None when
        stdout is no write-only pipe (a file, a terminal, a socket): then only a write finds out."""
        try:
            fd = self._out.fileno()
            mode = os.fstat(fd).st_mode
            access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            return None
        if not stat.S_ISFIFO(mode) or access != os.O_WRONLY:
            return None
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()

        def on_error() -> None:
            # A write-only pipe never becomes readable: epoll reports EPOLLERR once no reader is left,
            # and the selector hands that to the reader callback.
            loop.remove_reader(fd)
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(fd, on_error)
        self._watched = fd
        return gone

    def _unwatch_reader(self) -> None:
        if self._watched is not None:
            asyncio.get_running_loop().remove_reader(self._watched)
            self._watched = None

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
