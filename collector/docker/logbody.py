"""A log stream's body, read from its socket in gathered pieces.

dockerd writes and flushes each log record on its own. Read as it arrives, a stream costs a wake-up
of the event loop and a socket read per line, and a chunk (queue, batch, acknowledgement) per few
lines: on a backlog dockerd sends more slowly than we take it, that cost more CPU than the lines
themselves. So the socket is read only while our reader waits in `read()`: between reads (while the
lines are parsed, or the queue is full) what dockerd sends waits in the socket buffer, and dockerd
once that is full (the flow control a stream has anyway). And a read that finds little gathers
more, in steps of `GATHER_STEP_SECONDS`, up to `GATHER_BYTES` or `GATHER_SECONDS`: a busy stream's
reads are large and never wait; a quiet stream's line waits at most `GATHER_SECONDS`.
"""

from __future__ import annotations

import asyncio

import aiohttp

GATHER_BYTES = 64 * 1024
GATHER_SECONDS = 0.02
GATHER_STEP_SECONDS = 0.002


class LogBody:
    """`read(n)` as aiohttp's StreamReader has it; the response stays its owner's to close."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._set_reading(False)

    async def read(self, n: int = -1) -> bytes:
        first = await self._read_once(n)
        if n < 0 or not first or len(first) >= min(n, GATHER_BYTES):
            return first
        parts, size = [first], len(first)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_SECONDS
        while size < min(n, GATHER_BYTES) and (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(GATHER_STEP_SECONDS, left))  # the socket fills meanwhile
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    more = await self._read_once(n - size)
            except TimeoutError:
                break  # nothing more came in time: what we have goes now
            if not more:
                break  # the end: the next read returns b""
            parts.append(more)
            size += len(more)
        return b"".join(parts)

    async def _read_once(self, n: int) -> bytes:
        self._set_reading(True)
        try:
            return await self._response.content.read(n)
        finally:
            self._set_reading(False)

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
