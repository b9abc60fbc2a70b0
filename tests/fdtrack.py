"""Counts every os.open / os.close of files under a directory: a double close or a descriptor left
open is seen by number, whatever closed it (the registry, the tailer, a cleanup path)."""

from __future__ import annotations

import os
from typing import Any

import pytest


class FdTracker:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, under: str) -> None:
        self.under = str(under)
        self.open_fds: dict[int, str] = {}  # fd -> path, for those opened here and not closed yet
        self.opened = 0
        self.double_closes: list[int] = []  # closes of a number we had closed already
        self._closed: set[int] = set()
        real_open, real_close = os.open, os.close

        def tracked_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            self._closed.discard(fd)  # the number is in use again: its next close is a first one
            if str(path).startswith(self.under):
                self.open_fds[fd] = str(path)
                self.opened += 1
            return fd

        def tracked_close(fd: int) -> None:
            if fd in self.open_fds:
                del self.open_fds[fd]
                self._closed.add(fd)
            elif fd in self._closed:
                self.double_closes.append(fd)
            real_close(fd)

        monkeypatch.setattr(os, "open", tracked_open)
        monkeypatch.setattr(os, "close", tracked_close)

    def leaked(self) -> dict[int, str]:
        return dict(self.open_fds)
