"""The files of one container's json-file log that a tailer holds open, each owned and closed once.

A held file is read to its end through its descriptor whatever Docker does to its name (rename on
rotation, unlink on `--rm` or past `max-file`). Which live file each one was is told by the inotify
hub's count of creations of the live name.
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from dataclasses import dataclass

from collector.sources.handles import OwnedFd
from collector.sources.inotify import InotifyHub
from collector.sources.logchain import Gunzip, Rotated, fingerprint_fd, list_chain


@dataclass(slots=True, eq=False)
class LogFile:
    """One file of the chain, held open: it owns its descriptor."""

    handle: OwnedFd
    inode: int
    name: str  # its name when opened (Docker renames it later)
    seq: int | None  # which live file it was: 0 the live file when the tailer began, -k its .k
    gunzip: Gunzip | None = None
    fingerprint: int = 0
    damaged: bool = False  # a .gz that zlib cannot inflate past some point: the rest is skipped

    @classmethod
    def adopt(cls, handle: OwnedFd, name: str, seq: int | None, gz: bool) -> LogFile:
        """Take `handle` over; if it cannot be made one (a damaged .gz), it is closed here."""
        try:
            fd = handle.fd
            # A .gz's first record is one small inflate away: every position names its file.
            return cls(handle, os.fstat(fd).st_ino, name, seq, Gunzip(fd) if gz else None, fingerprint_fd(fd, gz))
        except BaseException:
            handle.close()
            raise

    @property
    def fd(self) -> int:
        return self.handle.fd

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        self.handle.close()


def gz_fingerprint_of(handle: OwnedFd) -> int:
    """0 (matches nothing) for a `.gz` whose start zlib cannot inflate."""
    try:
        return fingerprint_fd(handle.fd, gz=True)
    except zlib.error:
        return 0


def gz_fingerprint_at(name: str) -> int:
    """The fingerprint of the `.gz` named `name`; 0 when it is gone or damaged."""
    try:
        handle = OwnedFd.open(name)
    except FileNotFoundError:
        return 0
    with handle:
        return gz_fingerprint_of(handle)


class HeldChain:
    """The files of one container's chain a tailer holds open (the one it reads, the newer ones
    ahead, oldest first: the last is the live one), and the inotify hub's count of the live
    name's creations that tells which live file each was. Every file it holds is closed once: when
    it is dropped, or by close()."""

    def __init__(self, path: str, hub: InotifyHub) -> None:
        self.path = path
        self.hub = hub
        self.directory, self.base = os.path.split(path)
        self.current: LogFile | None = None
        self.ahead: deque[LogFile] = deque()
        self.created_base = 0  # hub creations of the live name when the tailer began (seq 0)
        self.overflows = hub.overflows
        self.unsettled = 0  # looks in a row that found the directory mid-rotation

    def created(self) -> int:
        return self.hub.creations(self.directory, self.base)

    def listed(self, tries: int = 100, holes_after: int | None = None) -> list[Rotated] | None:
        """The chain as it is now, with the hub's counts brought up to the same moment. A rotation
        is a few renames, so a stable listing comes quickly; a hole that stays is taken as it is."""
        for attempt in range(tries):
            self.hub.sync()
            created = self.created()
            chain = list_chain(self.path, allow_holes=attempt >= (tries - 1 if holes_after is None else holes_after))
            self.hub.sync()
            if chain is not None and self.created() == created:
                if self.current is None:
                    self.created_base = created
                return chain
            if not os.path.isdir(self.directory):
                return None
        return None

    def still_listed(self, created: int) -> bool:
        """No live file was created since the listing that counted `created`: names opened since
        are the files listed (a rotation moves every name on by one, so a name opened after it
        would be a newer file than listed, the listed one skipped unread)."""
        self.hub.sync()
        return self.created() == created

    def hold(self, opened: LogFile) -> None:
        """The next file in reading order: the current one if there is none yet, else one ahead."""
        if self.current is None:
            self.current = opened
        else:
            self.ahead.append(opened)

    def release(self, handle: OwnedFd) -> None:
        """Stop holding the file opened through `handle`, without closing it: the caller owns it again."""
        kept = [f for f in (self.files() if self.current is not None else []) if f.handle is not handle]
        self.current, self.ahead = (kept[0] if kept else None), deque(kept[1:])

    def files(self) -> list[LogFile]:
        assert self.current is not None
        return [self.current, *self.ahead]

    def keep_from(self, index: int) -> None:
        """Close the files older than `index` (0: the current one); read from that one on."""
        files = self.files()
        for dropped in files[:index]:
            dropped.close()
        self.current, self.ahead = files[index], deque(files[index + 1:])

    def advance(self) -> None:
        """The current file is read to its end: close it, the next one ahead is read now."""
        assert self.current is not None
        self.current.close()
        self.current = self.ahead.popleft()

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        while self.ahead:
            self.ahead.popleft().close()
