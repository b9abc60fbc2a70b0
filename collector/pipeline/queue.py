"""A FIFO of chunks bounded in bytes: sources wait when it is full (the log file is the buffer).

Waiting putters are served strictly in arrival order, so a busy source cannot starve a quiet one:
each source puts bounded chunks and waits its turn behind the others.

The sink can pause one container (Loki throttles its stream): its source then waits before it
reads, out of the line of putters, so the others keep their turns and the log file stays the buffer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from collector.pipeline.entry import Chunk


class QueueClosed(Exception):
    """put() on a closed queue, or get() on a closed queue that has nothing left."""


class ChunkQueue:
    def __init__(self, max_bytes: int, on_put: Callable[[Chunk], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self._on_put = on_put  # sees every chunk that goes in (the in-flight ledger)
        self._items: deque[Chunk] = deque()
        self._bytes = 0
        self._closed = False
        self._putters: deque[asyncio.Future[None]] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._paused: dict[str, asyncio.Event] = {}  # by container id; bounded by what the sink paces

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _fits(self, nbytes: int) -> bool:
        # An item larger than the bound still goes in when the queue is empty, else it never would.
        return not self._items or self._bytes + nbytes <= self.max_bytes

    async def room(self, nbytes: int, container_id: str = "") -> None:
        """Wait for this caller's turn and room for `nbytes`. A source calls it before it reads, then
        queues what it read with put_nowait: a source held back by a full queue holds nothing read
        (with 500 busy containers and Loki down, a parsed chunk held by each would be ~100k lines
        beyond the bound). The next waiter is woken to look for itself: this caller may put nothing.
        A paused container waits first, outside the line, until the sink resumes it."""
        while (paused := self._paused.get(container_id)) is not None and not self._closed:
            await paused.wait()
        if await self._turn(nbytes) and self._bytes < self.max_bytes:
            self._wake(self._putters)

    async def put(self, chunk: Chunk) -> None:
        await self._turn(chunk.nbytes)
        self.put_nowait(chunk)  # wakes the next waiter when there is room left

    async def _turn(self, nbytes: int) -> bool:
        """Wait until no earlier waiter is ahead and `nbytes` fit; True if it had to wait."""
        first_try = True
        while not self._closed and (self._putters and first_try or not self._fits(nbytes)):
            waiter = asyncio.get_running_loop().create_future()
            # A waiter that was woken but still does not fit keeps its place at the front.
            (self._putters.append if first_try else self._putters.appendleft)(waiter)
            first_try = False
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._putters:
                    self._putters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake(self._putters)  # pass the turn on
                raise
        if self._closed:
            raise QueueClosed("queue closed")
        return not first_try

    def pause(self, container_id: str) -> None:
        """The container's source reads nothing more until resume()."""
        self._paused.setdefault(container_id, asyncio.Event())

    def resume(self, container_id: str) -> None:
        paused = self._paused.pop(container_id, None)
        if paused is not None:
            paused.set()

    @property
    def paused(self) -> frozenset[str]:
        return frozenset(self._paused)

    def put_nowait(self, chunk: Chunk) -> None:
        """Queue without waiting (after room(), or for the little a source flushes at its end)."""
        if self._closed:
            raise QueueClosed("queue closed")
        self._items.append(chunk)
        self._bytes += chunk.nbytes
        if self._on_put is not None:
            self._on_put(chunk)
        self._wake(self._getters)
        if self._bytes < self.max_bytes:
            self._wake(self._putters)

    def get_nowait(self) -> Chunk | None:
        if not self._items:
            return None
        chunk = self._items.popleft()
        self._bytes -= chunk.nbytes
        self._wake(self._putters)
        return chunk

    async def get(self) -> Chunk:
        while not self._items:
            if self._closed:
                raise QueueClosed("queue closed and drained")
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._getters:
                    self._getters.remove(waiter)
                raise
        chunk = self.get_nowait()
        assert chunk is not None
        return chunk

    def close(self) -> None:
        """No more puts; getters drain what is left, then get QueueClosed."""
        self._closed = True
        for container_id in list(self._paused):
            self.resume(container_id)
        for waiters in (self._putters, self._getters):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
