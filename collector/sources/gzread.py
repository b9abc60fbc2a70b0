"""Reading a rotated `.gz` of a json-file log: inflated in a thread, off the event loop, and waited
for while Docker is still compressing it."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import TypeVar

from collector.sources.heldchain import LogFile
from collector.sources.rotation import FileLosses

# A `.gz` that stops growing before its end for this long was abandoned (Docker died mid-compress).
_GZ_PATIENCE = 60.0

_T = TypeVar("_T")


async def in_thread(call: Callable[[], _T]) -> _T:
    """Run a read of a held file in a thread. Cancelled meanwhile, it still waits for the thread:
    the file is closed after this returns, and the thread must not read a number reused by then."""
    done = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        while not done.done():
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                continue
            except Exception:  # noqa: BLE001 - we are cancelled: its own error no longer matters
                break
        raise


async def read_gz(current: LogFile, offset: int, chunk: int, losses: FileLosses) -> bytes:
    """Up to `chunk` bytes of a `.gz`'s content from `offset`; b"" at its end so far, or once it
    proved damaged (counted)."""
    gunzip = current.gunzip
    assert gunzip is not None
    if current.damaged:
        return b""
    # Decompression costs CPU: off the loop.
    try:
        if gunzip.offset < offset and not await in_thread(lambda: gunzip.skip(offset)):
            return b""  # resuming inside a .gz that is not written that far yet
        return await in_thread(lambda: gunzip.read(chunk))
    except zlib.error as err:
        current.damaged = True
        losses.damaged(current.name, err)
        return b""


class GzPatience:
    """A .gz that ends early is being written: wait for it, unless it stopped growing long ago."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: tuple[float, int] | None = None  # since when a .gz ends early, at what size

    def reset(self) -> None:
        self._waiting = None

    def abandoned(self, current: LogFile, now: float, losses: FileLosses) -> bool:
        size = current.size()
        if self._waiting is None or self._waiting[1] != size:
            self._waiting = (now, size)
            return False
        if now - self._waiting[0] < _GZ_PATIENCE:
            return False
        losses.lost(1, None, f"{current.name} ends before its end and stopped growing {_GZ_PATIENCE:.0f}s ago")
        return True
