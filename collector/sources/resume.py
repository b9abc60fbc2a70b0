"""Pure: where an Engine API stream resumes, so that no record is lost to `since`. No I/O.

Docker stamps stdout and stderr in separate goroutines and writes whichever comes first, and a
host clock can step back: a record can carry an earlier time than the one before it. dockerd's
`since` hides records stamped before it (Engine <= 22 every such record; Engine >= 23 those before
the first record at or after it). So a stream does not resume at its newest record's time but a
window earlier (`RESUME_WINDOW_NS`, at least 10 s before it), and skips by count the records it
delivered already: dockerd sends them again in the order it sent them first. A record stamped up
to 10 s earlier than any record before it survives a reconnect or a restart; one stamped more
than that earlier survives unless the stream resumes between the two (counted, `beyond_window`).

The count is kept per 10 s bucket of record time: the window moves a bucket at a time, so the
records to drop from the count when it moves are known without remembering each record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.pipeline.entry import StreamPosition

RESUME_WINDOW_NS = 10 * 1_000_000_000  # the clock step back (or stdout/stderr skew) tolerated


@dataclass(slots=True)
class Resume:
    """Per connection: which records the previous connection delivered, and the position now."""

    start: StreamPosition  # where this connection was asked to resume
    gap: bool = False  # Docker no longer has what was delivered at `start`: it rotated past it
    skipped: int = 0  # records skipped as delivered before
    beyond_window: int = 0  # records stamped more than the window earlier than a record before them
    _seeking: bool = True  # no record at or after `since` seen yet
    _to_skip: int = 0
    _newest: int = 0
    _floor: int = 0  # `since` of this connection: the window never starts before it
    _since: int = 0
    _counts: dict[int, int] = field(default_factory=dict)  # bucket (time // window) -> records counted

    def __post_init__(self) -> None:
        self._to_skip = self.start.count
        self._floor = self.start.ts_ns
        self._newest = self.start.newest
        self._since = max(_window_start(self._newest), self._floor)

    @property
    def replaying(self) -> bool:
        """Still before or among the records delivered before: take records one by one."""
        return self._seeking or self._to_skip > 0

    def skip(self, ts_ns: int) -> bool:
        """Whether this record was delivered before (counting it as it passes)."""
        if self._seeking:
            if ts_ns < self.start.ts_ns:
                self.skipped += 1  # before `since`: dockerd does not send these, a test might
                return True
            self._seeking = False
            if self.start.count and ts_ns > self.start.newest:
                self.gap = True  # every record delivered at the window is gone: skip none
                self._to_skip = 0
        if self._to_skip:
            self._to_skip -= 1
            self.count(ts_ns)
            self.skipped += 1
            return True
        return False

    def count(self, ts_ns: int) -> None:
        """A record delivered (or skipped as delivered): the next connection gets it again if it
        is in the window then."""
        if ts_ns > self._newest:
            self._move(ts_ns)
        if ts_ns >= self._since:
            bucket = ts_ns // RESUME_WINDOW_NS
            self._counts[bucket] = self._counts.get(bucket, 0) + 1
        else:
            self.beyond_window += 1

    def count_many(self, stamps: list[int]) -> None:
        """`count` for many records at once (the plain-frame path)."""
        newest, lowest = max(stamps), min(stamps)
        bucket = newest // RESUME_WINDOW_NS
        since = max(_window_start(newest), self._floor) if newest > self._newest else self._since
        if lowest >= since and lowest // RESUME_WINDOW_NS == bucket:
            # The usual case, one bucket inside the window even after the move: what `count` per
            # record in order would do. Otherwise each in order: an older record read before a
            # newer one is in the window when it is counted, not beyond it.
            if newest > self._newest:
                self._move(newest)
            self._counts[bucket] = self._counts.get(bucket, 0) + len(stamps)
            return
        for ts_ns in stamps:
            self.count(ts_ns)

    def position(self) -> StreamPosition:
        if self.replaying:
            return self.start  # not past what was delivered before yet
        return StreamPosition(self._since, sum(self._counts.values()), self._newest)

    def _move(self, newest: int) -> None:
        self._newest = newest
        since = max(_window_start(newest), self._floor)
        if since != self._since:
            self._since = since
            first = since // RESUME_WINDOW_NS
            for bucket in [b for b in self._counts if b < first]:
                del self._counts[bucket]


def _window_start(newest_ns: int) -> int:
    """The start of the bucket before the newest record's: between 10 and 20 s before it."""
    return max(0, (newest_ns // RESUME_WINDOW_NS - 1) * RESUME_WINDOW_NS)
