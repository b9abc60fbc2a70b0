"""A unix-socket proxy in front of the Docker socket that a test can cut and restore."""

from __future__ import annotations

import asyncio
import contextlib
import os


class CutProxy:
    def __init__(self, listen_path: str, target_path: str) -> None:
        self.listen_path = listen_path
        self.target_path = target_path
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return f"unix://{self.listen_path}"

    async def start(self) -> CutProxy:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.listen_path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.listen_path)
        os.chmod(self.listen_path, 0o666)  # a non-root collector may connect
        return self

    async def cut(self) -> None:
        """Stop listening and drop every connection, as a proxy restart would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.target_path)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        pipes = [asyncio.create_task(self._pipe(reader, upstream_writer)), asyncio.create_task(self._pipe(upstream_reader, writer))]
        self._pipes.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._pipes.difference_update(pipes)
            for w in (writer, upstream_writer):
                self._writers.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.transport.abort()
