"""A log stream's body, read from its socket in gathered pieces.

dockerd writes and flushes each log record on its own. Read as it arrives, a stream costs a wake-up
of the event loop and a socket read per line (epoll, a recv into a fresh 256 KiB buffer, aiohttp's
parser): on a backlog dockerd sends more slowly than we take it, that cost more CPU than all the
rest we do with the line. So the socket is read only while our reader waits in `read()`: between
reads (while the line is parsed, or the queue is full) what dockerd sends waits in the socket buffer
(and dockerd, once that is full: the flow control a stream has anyway). After a short read the
next one waits a moment (`GATHER_SECONDS`), so a trickle comes in pieces too. A busy stream's reads
are large and never wait; a quiet stream's next line waits at most that long.
"""

from __future__ import annotations

import asyncio

import aiohttp

GATHER_SECONDS = 0.002
SHORT_READ_BYTES = 16 * 1024  # after a read smaller than this, the next one waits GATHER_SECONDS


class LogBody:
    """`read(n)` as aiohttp's StreamReader has it; the response stays its owner's to close."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._next_read_at = 0.0
        self._set_reading(False)

    async def read(self, n: int = -1) -> bytes:
        loop = asyncio.get_running_loop()
        wait = self._next_read_at - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._set_reading(True)
        try:
            data = await self._response.content.read(n)
        finally:
            self._set_reading(False)
        if len(data) < SHORT_READ_BYTES:
            self._next_read_at = loop.time() + GATHER_SECONDS
        return data

    def _set_reading(self, reading: bool) -> None:
        """Let the connection read its socket, or not (nothing once the connection is released)."""
        connection = self._response.connection
        protocol = connection.protocol if connection is not None else None
        if protocol is None:
            return
        if reading:
            protocol.resume_reading()
        else:
            protocol.pause_reading()
