"""Following Docker's rotation of a json-file log, and counting what it deleted before it was read.

When the live file is no longer the newest one held, every newer file is opened (read after ours,
oldest first). A file Docker deleted before anybody opened it, or a `.gz` zlib cannot inflate, is
counted in the tailer's stats and logged.
"""

from __future__ import annotations

import logging
import os
import zlib

from collector.pipeline.entry import Origin
from collector.sources.handles import OwnedFd
from collector.sources.heldchain import HeldChain, LogFile, gz_fingerprint_at
from collector.sources.logchain import Rotated
from collector.sources.source import SourceStats

log = logging.getLogger(__name__)

# A reader that is behind holds at most this many newer files open (each keeps a deleted file's
# disk space until it is read); past that, what Docker deletes before it is reached is counted.
_MAX_AHEAD = 16
# Each lost file is logged; a reader far behind logs at most this many lines per gap.
_LOST_LOG_LINES = 10
# Listings in a row a rotation may overtake while the files are opened, before the next wake.
_LIST_TRIES = 5


class FileLosses:
    """What a tailer could not read, counted in its stats and logged: files Docker deleted before
    they were opened, `.gz` files zlib cannot inflate."""

    def __init__(self, stats: SourceStats, origin: Origin, path: str) -> None:
        self.stats = stats
        self.origin = origin
        self.path = path

    def lost(self, files: int, nbytes: int | None, why: str) -> None:
        self.stats.files_lost += files
        self.stats.lose("rotated_file_deleted", files)
        if nbytes:
            self.stats.lost_bytes += nbytes
        for index in range(min(files, _LOST_LOG_LINES)):
            log.warning("json-file log lost: " + why, extra={
                "container_id": self.origin.container_id[:12], "path": self.path,
                "file": index + 1, "files_lost": files, **({"lost_bytes": nbytes} if nbytes else {})})

    def damaged(self, name: str, err: zlib.error) -> None:
        """A rotated `.gz` zlib cannot inflate (a power cut while dockerd compressed it): what it
        holds from there on is lost; the files around it are read as usual."""
        self.stats.errors += 1
        self.stats.last_error = f"damaged {os.path.basename(name)}: {err}"
        self.lost(1, None, f"{os.path.basename(name)} is damaged ({err}); the rest of it is skipped")


def adopt_or_skip(handle: OwnedFd, name: str, seq: int | None, gz: bool, losses: FileLosses) -> LogFile | None:
    """The file as one of ours; None for a `.gz` whose start cannot be inflated (counted)."""
    try:
        return LogFile.adopt(handle, name, seq, gz)
    except zlib.error as err:
        if not gz:
            raise
        losses.damaged(name, err)
        return None


def look_ahead(held: HeldChain, losses: FileLosses) -> bool:
    """After the directory changed: if the newest file we know of (ours, at EOF of the live
    file; else the last one ahead) is the live file no more, open every file newer than it
    (read after ours, oldest first). Also done between chunks of a reader that is behind, so
    Docker deleting a file it has not reached yet loses nothing (up to _MAX_AHEAD files)."""
    newest = held.ahead[-1] if held.ahead else held.current
    assert newest is not None
    if newest.gunzip is not None or len(held.ahead) >= _MAX_AHEAD:
        return False
    try:
        if os.stat(held.path).st_ino == newest.inode:
            held.unsettled = 0
            return False
    except FileNotFoundError:
        return False  # removed (destroy) or mid-rotation: keep our handle, the poll looks again
    newer = _newer_files(held, newest, 5 if held.unsettled < 3 else 0, losses)
    if not newer:
        held.unsettled += 1
        return False  # mid-rotation: Docker's creating the live file wakes us, or the poll does
    held.unsettled = 0
    held.ahead.extend(newer)
    return True


def _newer_files(held: HeldChain, current: LogFile, holes_after: int, losses: FileLosses) -> list[LogFile]:
    for _ in range(_LIST_TRIES):
        chain = held.listed(tries=5, holes_after=holes_after)
        if chain is None:
            return []
        created = held.created()
        ours = _find(chain, current)
        newer = chain if ours is None else chain[ours + 1:]
        try:
            handles = _open_all(newer)
        except FileNotFoundError:
            return []  # renamed meanwhile: list again at the next wake
        if held.still_listed(created):
            break
        for handle in handles:  # Docker rotated while they were opened: a listed file may be skipped
            handle.close()
    else:
        return []  # overtaken every time: the next wake or poll looks again
    live_seq = created - held.created_base
    if ours is not None:
        if current.seq != live_seq - chain[ours].index:
            # Events were missed (queue overflow, no watch): count on from where we are.
            current.seq = live_seq - chain[ours].index
        held.overflows = held.hub.overflows
    else:
        _count_deleted(held, current, chain[0], live_seq, losses)
        live_seq = held.created() - held.created_base  # re-anchored if it could not be told
    return _adopt_all(handles, newer, live_seq, losses)


def _open_all(entries: list[Rotated]) -> list[OwnedFd]:
    handles: list[OwnedFd] = []
    try:
        for entry in entries:
            handles.append(OwnedFd.open(entry.name))
    except BaseException:
        for handle in handles:
            handle.close()
        raise
    return handles


def _adopt_all(handles: list[OwnedFd], entries: list[Rotated], live_seq: int, losses: FileLosses) -> list[LogFile]:
    """The opened files as ours; every handle is owned by the result or closed, whatever happens."""
    opened: list[LogFile] = []
    left = list(zip(handles, entries, strict=True))
    try:
        while left:
            handle, entry = left.pop(0)  # adopt_or_skip owns it from here: it closes it if it fails
            made = adopt_or_skip(handle, entry.name, live_seq - entry.index, entry.gz, losses)
            if made is not None:
                opened.append(made)
    except BaseException:
        for made in opened:
            made.close()
        for handle, _ in left:
            handle.close()
        raise
    return opened


def _find(chain: list[Rotated], current: LogFile) -> int | None:
    """Where our file is in the chain now: by inode, or as the .gz Docker made of it."""
    for at, entry in enumerate(chain):
        if entry.gz:
            continue
        try:
            if os.stat(entry.name).st_ino == current.inode:
                return at
        except FileNotFoundError:
            continue
    if current.fingerprint:
        for at, entry in enumerate(chain):
            if entry.gz and gz_fingerprint_at(entry.name) == current.fingerprint:
                return at
    return None


def _count_deleted(held: HeldChain, current: LogFile, oldest: Rotated, live_seq: int, losses: FileLosses) -> None:
    """Our file is gone from the directory (we read it through our handle): the files between
    it and the oldest one still there were deleted unread."""
    hub = held.hub
    if hub.overflows != held.overflows or not hub.watching(held.directory) or current.seq is None:
        held.overflows = hub.overflows
        log.warning("rotated files may have been deleted unread; how many cannot be told (inotify events were missed)",
                    extra={"container_id": losses.origin.container_id[:12], "path": held.path})
        held.created_base = held.created() - (current.seq or 0) - 1 - oldest.index
        return
    missing = (live_seq - oldest.index) - current.seq - 1
    if missing > 0:
        losses.lost(missing, None, "rotated file deleted by Docker before it was read (the reader was behind)")
