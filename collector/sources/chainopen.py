"""Where a json-file tailer begins: the chain of files opened at once, from a saved position, the
oldest rotated file, or the live file."""

from __future__ import annotations

import errno
import os

from collector.pipeline.entry import FilePosition
from collector.sources.handles import OwnedFd
from collector.sources.heldchain import HeldChain, LogFile, gz_fingerprint_of
from collector.sources.logchain import Rotated, fingerprint_fd
from collector.sources.rotation import FileLosses, adopt_or_skip


def open_chain(held: HeldChain, position: FilePosition | None, preopened: OwnedFd | None, from_oldest: bool,
               losses: FileLosses) -> int:
    """Open at once (not in the task): the handles must exist before the files can be deleted.
    Returns the offset to read the current file from.

    `preopened` is the live file, opened when the start event arrived (before inspect); it is
    owned here from the call on, whatever happens. With a saved position, the file it names (same
    inode and first record, or its `.gz`) is read from there, then every newer file; if it is
    gone, Docker deleted it with whatever was left unread: counted, and every file there is read.
    Without one: `from_oldest` starts at the oldest rotated file (a fast writer may have rotated
    before the start event reached us), else at the live file.
    """
    try:
        for attempt in range(3):
            chain = held.listed()
            if chain is None:
                # The directory is gone (a removed container whose log we hold) or mid-rotation.
                handle, preopened = preopened or OwnedFd.open(held.path), None
                held.current = LogFile.adopt(handle, held.path, None, gz=False)
                same = position is not None and position.inode == held.current.inode
                return position.offset if position is not None and same else 0
            created = held.created()
            first, offset = _first_of(chain, position, from_oldest)
            given = preopened
            try:
                preopened = _open_entries(held, chain[max(first, 0):], preopened, losses)
                if not held.still_listed(created):
                    # Docker rotated while they were opened by name: a name may be a newer file
                    # than listed (the saved file read from its offset in another one).
                    raise FileNotFoundError(errno.ENOENT, "the log rotated while it was opened", held.path)
            except FileNotFoundError:
                if given is not None:  # the file held since the start event stays ours for the next try
                    held.release(given)
                    preopened = given
                held.close()  # Docker renamed a file between the listing and the open
                if attempt == 2:
                    raise
                continue
            break
        if first == -1:
            losses.lost(1, None, "the saved file was deleted (rotated away) before it was read to its end")
        if preopened is not None and position is None and from_oldest:
            # The file held since the start event is in the chain no more: rotated past every
            # file there (a fast writer with a small max-file). It is the oldest: read it first.
            handle, preopened = preopened, None
            oldest = LogFile.adopt(handle, held.path, None, gz=False)
            if held.current is not None:
                held.ahead.appendleft(held.current)
            held.current = oldest
        if held.current is None:
            raise FileNotFoundError(f"no readable file in {held.directory}")  # every one was a damaged .gz
        return offset
    except BaseException:
        held.close()
        raise
    finally:
        if preopened is not None:
            preopened.close()


def _open_entries(held: HeldChain, entries: list[Rotated], preopened: OwnedFd | None,
                  losses: FileLosses) -> OwnedFd | None:
    """Open `entries` (oldest first) as the current file and the ones ahead; returns the
    preopened descriptor if it was not one of them. A damaged `.gz` is counted and skipped."""
    for entry in entries:
        handle = _open_entry(entry, preopened)
        if handle is preopened:
            preopened = None
        opened = adopt_or_skip(handle, entry.name, -entry.index, entry.gz, losses)
        if opened is not None:
            held.hold(opened)
    return preopened


def _first_of(chain: list[Rotated], position: FilePosition | None, from_oldest: bool) -> tuple[int, int]:
    """(index into `chain` to begin at, offset there); index -1: the saved file is gone, begin
    at the oldest file."""
    if position is None:
        return (0 if from_oldest else len(chain) - 1), 0
    for at, entry in enumerate(chain):
        if _is_saved_file(entry, position):
            return at, position.offset
    return -1, 0


def _is_saved_file(entry: Rotated, position: FilePosition) -> bool:
    try:
        handle = OwnedFd.open(entry.name)
    except FileNotFoundError:
        return False
    with handle:
        if entry.gz:
            return position.fingerprint != 0 and gz_fingerprint_of(handle) == position.fingerprint
        st = os.fstat(handle.fd)
        if st.st_ino != position.inode or st.st_size < position.offset:
            return False
        return position.fingerprint == 0 or fingerprint_fd(handle.fd, gz=False) == position.fingerprint


def _open_entry(entry: Rotated, preopened: OwnedFd | None) -> OwnedFd:
    if preopened is not None and not entry.gz:
        try:
            if os.stat(entry.name).st_ino == os.fstat(preopened.fd).st_ino:
                return preopened
        except FileNotFoundError:
            pass
    return OwnedFd.open(entry.name)
