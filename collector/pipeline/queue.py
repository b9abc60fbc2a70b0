"""A FIFO of chunks bounded in bytes: sources wait when it is full (the log file is the buffer).

Waiting putters are served strictly in arrival order, so a busy source cannot starve a quiet one:
each source puts bounded chunks and waits its turn behind the others.

The sink can pause one container (Loki throttles its stream): its source then waits before it
reads, out of the line of putters, so the others keep their turns and the log file stays the buffer.

With a spool (spool/store.py), a full queue *spills*: room() returns at once while the spool has
room, and put_nowait appends to the spool instead. Once the lane spills, every chunk of it goes to
the spool until `refill` has read the spool back up to its writer (order is kept without tracking
containers); then the memory path again. A full spool: room() waits, as without one. The spool
learns which containers are paused: it moves their records aside rather than hand them back while
the sink holds their stream (spool/lane.py), and `resume` has the refill look again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from collector.pipeline.entry import Chunk

log = logging.getLogger(__name__)


class Overflow(Protocol):
    """What the queue needs of a spool."""

    def attach(self, on_change: Callable[[], None], held: Callable[[str], bool]) -> None: ...
    def has_room(self, nbytes: int) -> bool: ...
    def append(self, chunk: Chunk) -> None: ...
    def has_unread(self) -> bool: ...
    def caught_up(self) -> bool: ...
    async def read(self, max_bytes: int) -> list[Chunk]: ...


class QueueClosed(Exception):
    """put() on a closed queue, or get() on a closed queue that has nothing left."""


class ChunkQueue:
    def __init__(self, max_bytes: int, on_put: Callable[[Chunk], None] | None = None, spool: Overflow | None = None,
                 read_ahead: int | None = None) -> None:
        self.max_bytes = max_bytes
        # What the refill keeps read back from the spool: the sink's next batches, not the whole
        # bound (a disk read is quick; each chunk read back costs about three times its bytes).
        self.read_ahead = min(max_bytes, read_ahead or max_bytes)
        self._on_put = on_put  # sees every chunk that goes in, to memory or to the spool (the ledgers)
        self._spool = spool
        self._spilling = False
        self.backlog_first()
        self._refill_wanted = asyncio.Event()
        self.spills = 0  # times the lane switched to the spool
        # Called as the lane starts spilling, before what is queued goes to the spool: the app has
        # the spool keep a copy of what the sink holds (older still), so it pins no position either.
        self.before_spill: Callable[[], object] = lambda: None
        self._items: deque[Chunk] = deque()
        self._bytes = 0
        self._closed = False
        self._putters: deque[asyncio.Future[None]] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._paused: dict[str, asyncio.Event] = {}  # by container id; bounded by what the sink paces
        if spool is not None:
            spool.attach(self._spool_changed, self._paused.__contains__)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def backlog_first(self) -> None:
        """A backlog a previous run left in the spool goes before anything read now (call it once
        the spool is open, before sources start)."""
        if self._spool is not None and self._spool.has_unread():
            self._spilling = True

    @property
    def spilling(self) -> bool:
        return self._spilling

    def _fits(self, nbytes: int) -> bool:
        if self._spilling:
            return self._spool is not None and self._spool.has_room(nbytes)
        # An item larger than the bound still goes in when the queue is empty, else it never would.
        return not self._items or self._bytes + nbytes <= self.max_bytes or self._spills_to_spool(nbytes)

    def _spills_to_spool(self, nbytes: int) -> bool:
        return self._spool is not None and self._spool.has_room(nbytes)

    def _spool_changed(self) -> None:
        """The spool has durable records to read back, or room again."""
        self._refill_wanted.set()
        if self._fits(1):
            self._wake(self._putters)

    async def room(self, nbytes: int, container_id: str = "") -> None:
        """Wait for this caller's turn and room for `nbytes`. A source calls it before it reads, then
        queues what it read with put_nowait: a source held back by a full queue holds nothing read
        (with 500 busy containers and Loki down, a parsed chunk held by each would be ~100k lines
        beyond the bound). The next waiter is woken to look for itself: this caller may put nothing.
        A paused container waits first, outside the line, until the sink resumes it."""
        while (paused := self._paused.get(container_id)) is not None and not self._closed:
            await paused.wait()
        if await self._turn(nbytes) and self._fits(1):
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
            self._refill_wanted.set()  # what the spool moved aside for it may be read back now

    @property
    def paused(self) -> frozenset[str]:
        return frozenset(self._paused)

    def put_nowait(self, chunk: Chunk) -> None:
        """Queue without waiting (after room(), or for the little a source flushes at its end)."""
        if self._closed:
            raise QueueClosed("queue closed")
        if self._on_put is not None:
            self._on_put(chunk)
        if self._spool is not None and (self._spilling or self._items and self._bytes + chunk.nbytes > self.max_bytes
                                        and self._spool.has_room(chunk.nbytes)):
            if not self._spilling:
                self._spilling = True
                self.spills += 1
                log.info("queue full: spilling to the spool", extra={"queued_bytes": self._bytes})
                # What waits in memory goes first: once durable it no longer pins its container's
                # position for the rest of the outage (after a crash, Docker may have rotated it away).
                self.before_spill()
                self.spill_remaining()
            self._to_spool(chunk)
        else:
            self._items.append(chunk)
            self._bytes += chunk.nbytes
            self._wake(self._getters)
        if self._fits(1):
            self._wake(self._putters)

    async def refill(self) -> None:
        """Read the spool back into memory, in order, whenever there is room (a task per lane with
        a spool); ends when the queue closes."""
        spool = self._spool
        assert spool is not None
        while not self._closed:
            self._refill_wanted.clear()
            free = self.read_ahead - self._bytes
            if free > 0 and spool.has_unread():
                for chunk in await spool.read(free):  # at least one, even above the bound
                    self._items.append(chunk)
                    self._bytes += chunk.nbytes
                self._wake(self._getters)
                continue
            if self._spilling and spool.caught_up():
                self._spilling = False  # read back up to the writer: the memory path again
                log.info("spool read back: the memory path again")
                self._wake(self._putters)
            await self._refill_wanted.wait()

    def _to_spool(self, chunk: Chunk) -> None:
        assert self._spool is not None
        self._spool.append(chunk)
        chunk.entries = []  # its record holds them: until its write it costs its bytes, not its lines

    def spill_remaining(self) -> int:
        """What is queued and not read back goes to the spool (when the lane starts spilling, and at
        shutdown once the sink is gone): durable at the next write rather than lost with the process.
        Read-back chunks are in the spool already: they stay, ahead. Returns how many were spooled."""
        if self._spool is None:
            return 0
        spooled = 0
        kept: deque[Chunk] = deque()  # read back already: older than the rest, sent from memory first
        while self._items:
            chunk = self._items.popleft()
            if chunk.spooled is None:
                self._bytes -= chunk.nbytes
                self._to_spool(chunk)
                spooled += 1
            else:
                kept.append(chunk)
        self._items = kept
        return spooled

    def get_nowait(self) -> Chunk | None:
        if not self._items:
            return None
        chunk = self._items.popleft()
        self._bytes -= chunk.nbytes
        self._refill_wanted.set()
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
        self._refill_wanted.set()
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
