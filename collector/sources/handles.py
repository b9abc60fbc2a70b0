"""Handles with one owner: whatever opened a log is released exactly once, by the object that holds it.

A descriptor number is reused by the kernel the moment it is closed, and a thread (a `.gz` read,
the positions writer) may be handed that number next: a second close of the same number would
close somebody else's file. So nothing passes a raw descriptor around; it passes an `OwnedFd`,
whose close() releases the number once and forgets it.

`HeldLog` is what a container's start event opened before the inspect decided how to read it:
its json-file log, or (without one) the API log stream requested at once. The task that routes
the container owns it; the reader chosen takes what it will read, close() releases the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from types import TracebackType

import aiohttp

from collector.docker.logstream import LogsUnavailable

log = logging.getLogger(__name__)


class OwnedFd:
    """A read-only descriptor of one file; close() releases it once, later calls do nothing."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls, path: str) -> OwnedFd:
        return cls(os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError("descriptor used after close")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> OwnedFd:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class HeldLog:
    """What was opened for a container before it was routed: one owner, released once."""

    __slots__ = ("_file", "_early", "_response")

    def __init__(self, file: OwnedFd | None = None) -> None:
        self._file = file
        self._early: asyncio.Task[aiohttp.ClientResponse] | None = None
        self._response: aiohttp.ClientResponse | None = None

    @property
    def has_file(self) -> bool:
        return self._file is not None

    def request_stream(self, connect: Awaitable[aiohttp.ClientResponse]) -> None:
        """Ask for the API stream now, beside the inspect: a short-lived `--rm` container may be
        removed before a request sent after the inspect reaches dockerd."""
        assert self._early is None and self._response is None
        self._early = asyncio.ensure_future(connect)

    async def settle(self) -> None:
        """Wait for the early stream request: afterwards its response (if it worked) is held here.
        A refusal or a connection error leaves nothing: the stream source asks again itself."""
        early = self._early
        if early is None:
            return
        try:
            response = await asyncio.shield(early)
        except (LogsUnavailable, aiohttp.ClientError, OSError):
            self._early = None
            return
        self._early, self._response = None, response

    def take_file(self) -> OwnedFd | None:
        """The json-file log, now owned by the caller."""
        file, self._file = self._file, None
        return file

    def take_response(self) -> aiohttp.ClientResponse | None:
        """The early stream's response (after settle()), now owned by the caller."""
        response, self._response = self._response, None
        return response

    def close(self) -> None:
        """Release whatever was not taken. An early request still under way is cancelled, and a
        response it produced anyway is closed when it arrives."""
        file, self._file = self._file, None
        if file is not None:
            file.close()
        response, self._response = self._response, None
        if response is not None:
            response.close()
        early, self._early = self._early, None
        if early is not None:
            early.cancel()
            early.add_done_callback(_close_late_response)

    def __enter__(self) -> HeldLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _close_late_response(early: asyncio.Future[aiohttp.ClientResponse]) -> None:
    if early.cancelled():
        return
    if early.exception() is None:
        early.result().close()
