"""The process's single inotify instance: one watch per container directory, waking its tailers.

Linux allows 128 inotify instances per user by default, so the process has exactly one. Events are
read synchronously whenever the descriptor is readable (and on demand through `sync()`), so a
tailer can bring the hub up to date with the directory before it looks at the files. The hub also
counts, per directory, how often a live json-file log (`<id>-json.log`) was created: a tailer learns
from it how many live files Docker opened, including ones it deleted before anybody read them. Other
names are not counted: dockerd writes `.tmp-config.v2.json<random>` on every health probe.

Directories are keyed by their normalised path, the form asyncinotify gives back in `watch.path`: a
directory spelled `a//b` or `a/b/` must match the events of its watch.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter

from asyncinotify import Inotify, Mask, Watch

log = logging.getLogger(__name__)

_DIR_MASK = (
    Mask.MODIFY | Mask.CREATE | Mask.MOVED_TO | Mask.MOVED_FROM | Mask.DELETE | Mask.DELETE_SELF | Mask.CLOSE_WRITE
)
# The only name a tailer asks `creations` about (Docker's live json-file log).
_COUNTED_SUFFIX = "-json.log"
_STRUCTURE = Mask.CREATE | Mask.MOVED_TO | Mask.MOVED_FROM | Mask.DELETE | Mask.DELETE_SELF | Mask.IGNORED


class Wakeup(asyncio.Event):
    """Set when a watched directory changes; `structure` says files were created, moved or removed
    (a rotation may have happened), as opposed to plain writes."""

    def __init__(self) -> None:
        super().__init__()
        self.structure = True  # look once at the start

    def set_structure(self) -> None:
        self.structure = True
        self.set()


class InotifyHub:
    """The process's single inotify instance; wakes the tailers watching a directory."""

    def __init__(self) -> None:
        self._inotify = Inotify()
        self._inotify.sync_timeout = 0  # sync_get() polls: None when nothing is queued
        self._waiters: dict[str, set[Wakeup]] = {}
        # The watch each directory holds now. An IN_IGNORED names the watch it ends: one removed
        # and added again (docker restart) must not take the new watch with it.
        self._watches: dict[str, Watch] = {}
        self._directory_of: dict[Watch, str] = {}  # the inverse of _watches
        self._created: dict[str, Counter[str]] = {}
        self.overflows = 0  # IN_Q_OVERFLOW seen: events were dropped, every tailer looked again

    @property
    def watch_count(self) -> int:
        return len(self._watches)

    def table_sizes(self) -> dict[str, int]:
        """Entries in each table (for /status and the churn tests): all bounded by the watched directories."""
        return {
            "watches": len(self._watches),
            "waiter_dirs": len(self._waiters),
            "waiters": sum(len(waiters) for waiters in self._waiters.values()),
            "created_names": sum(len(names) for names in self._created.values()),
        }

    def watching(self, directory: str) -> bool:
        return os.path.normpath(directory) in self._watches

    def creations(self, directory: str, name: str) -> int:
        """How many times `name` (a live `*-json.log`) was created in `directory` since the watch was added."""
        return self._created.get(os.path.normpath(directory), Counter())[name]

    def subscribe(self, directory: str) -> Wakeup:
        directory = os.path.normpath(directory)
        wake = Wakeup()
        if directory not in self._watches:
            try:
                watch = self._inotify.add_watch(directory, _DIR_MASK)
                self._watches[directory] = watch
                self._directory_of[watch] = directory
                self._created[directory] = Counter()
            except OSError as err:
                # No watch (e.g. a --rm container's directory is gone already, its log held open):
                # the tailer still runs on its safety poll.
                log.debug("inotify watch failed", extra={"directory": directory, "error": str(err)})
        self._waiters.setdefault(directory, set()).add(wake)
        return wake

    def unsubscribe(self, directory: str, wake: Wakeup) -> None:
        directory = os.path.normpath(directory)
        waiters = self._waiters.get(directory)
        if waiters is None:
            return
        waiters.discard(wake)
        if waiters:
            return
        del self._waiters[directory]
        self._created.pop(directory, None)
        watch = self._watches.pop(directory, None)
        if watch is not None:
            del self._directory_of[watch]
            try:
                self._inotify.rm_watch(watch)
            except OSError:
                pass  # the directory is gone and the kernel dropped the watch already

    async def run(self) -> None:
        """Handle events whenever the descriptor is readable, until cancelled."""
        loop = asyncio.get_running_loop()
        fd = self._inotify.fd
        loop.add_reader(fd, self.sync)
        try:
            await loop.create_future()  # never set: runs until cancelled
        finally:
            loop.remove_reader(fd)

    def sync(self) -> None:
        """Handle every event the kernel has queued now."""
        while True:
            try:
                event = self._inotify.sync_get()
            except BlockingIOError:
                return
            if event is None:
                return
            self._handle(event.watch, event.mask, event.name and str(event.name))

    def _handle(self, watch: Watch | None, mask: Mask, name: str | None) -> None:
        if Mask.Q_OVERFLOW in mask:
            self.overflows += 1
            log.warning("inotify queue overflowed: events were dropped, every file tailer looks again")
            for waiters in self._waiters.values():
                for wake in waiters:
                    wake.set_structure()
            return
        directory = self._directory_of.get(watch) if watch is not None else None
        if directory is None:
            return  # a late event of a removed watch (or the end of one this directory no longer holds)
        if Mask.IGNORED in mask:
            del self._watches[directory]
            del self._directory_of[watch]
        if Mask.CREATE in mask and name and name.endswith(_COUNTED_SUFFIX):
            self._created.setdefault(directory, Counter())[name] += 1
        structural = bool(mask & _STRUCTURE)
        for wake in self._waiters.get(directory, ()):
            if structural:
                wake.set_structure()
            else:
                wake.set()

    def close(self) -> None:
        self._inotify.close()
