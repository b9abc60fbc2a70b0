"""Pure: the Engine API's log stream (`GET /containers/{id}/logs?timestamps=1`) -> entries. No I/O.

Facts this relies on (checked on this engine, `local` driver; see design notes):
- non-TTY bodies are frames: 1 byte stream (1 stdout, 2 stderr), 3 zero bytes, a 4-byte big-endian
  length, then the payload; one frame holds one record: a 30-character RFC 3339 nano timestamp, a
  space, then the text;
- Docker splits lines over 16 KiB: a record whose text is exactly 16,384 bytes without `\\n` is a
  non-final part; the next record of the same stream ends the entry even when it has no `\\n` or
  is empty (its final part never carries the `\\n`). A short record without `\\n` that follows no
  part is a whole line (a last line without newline);
- TTY bodies are raw bytes: each record is the timestamp, a space and its text, with no framing.
  A record ends at its `\\n`, or after 16,384 bytes (a part); the final part of a split line has no
  `\\n`, so it ends where the next record's timestamp begins;
- when its log reader fails, dockerd writes `Error grabbing logs: <error>\\n` into the body (moby
  `api/server/httputils/write_log_stream.go`) and goes on: in a frame of stream 3 (system error),
  or raw between a TTY body's records. It is Docker's, not the container's: counted, never a line.

Positions: a stream resumes a window before its newest record and skips by count what it
delivered already (`resume.py`), because `since` hides records stamped before it and a record can
be stamped earlier than the one before it (stdout and stderr goroutines, a clock step back).
"""

from __future__ import annotations

import re
import sys
from array import array
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, itemgetter

from collector.pipeline.entry import Entry, StreamPosition
from collector.sources.resume import RESUME_WINDOW_NS, Resume
from collector.sources.splitlines import SplitLine, SplitLines
from collector.speedups import speedups
from collector.timefmt import BadTimestamp, parse_timestamp

__all__ = ["PART_BYTES", "RESUME_WINDOW_NS", "StreamDecoder", "StreamStats", "since_param"]

# Entry(...) at C speed: a NamedTuple's own constructor is a Python function, and the parser makes
# one entry per log line (about 0.14 µs saved per line).
_new_tuple = tuple.__new__
_TIMESTAMP = itemgetter(0)

PART_BYTES = 16 * 1024  # Docker's copier buffer: texts of exactly this size without newline are parts
_HEADER = 8
_STREAMS = {1: "stdout", 2: "stderr"}
_SYSTEM_ERROR = 3  # stdcopy.Systemerr: the frame of a Docker error text
DOCKER_ERROR = b"Error grabbing logs: "
_DOCKER_ERROR_MAX = 64 * 1024  # an error text longer than this without newline ends here
_TIMESTAMP_TAIL = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")

# The common frame, taken apart many at a time in C: a stdout/stderr header, Docker's fixed-width
# timestamp (second, then 9 fraction digits) and a text ending in its newline. The last
# alternative takes whatever follows the first frame of another shape (or an incomplete one), so
# the matches always follow each other from the start without a gap. The digits are checked
# apart (a regex digit class per byte costs more than the rest): the second once per new second
# (_SECOND), the fractions all at once.
_FRAMES = re.compile(rb"([\x01\x02])\x00\x00\x00(.{4})(.{19})\.(.{9})Z ([^\n]*)\n|(.).*", re.S)
_SECOND = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_FRAME_OVERHEAD = _HEADER + 32  # per plain frame beyond its text: header, timestamp, space, newline
_STREAM_OF = {b"\x01": "stdout", b"\x02": "stderr"}
_BIG_ENDIAN = sys.byteorder == "big"


@dataclass(slots=True)
class StreamStats:
    records: int = 0
    bad_records: int = 0
    truncated_lines: int = 0
    skipped_on_resume: int = 0
    docker_errors: int = 0  # `Error grabbing logs: ...` texts Docker put into the stream
    last_docker_error: str = ""
    beyond_window: int = 0  # records stamped more than RESUME_WINDOW_NS earlier than one before them
    last_error: str = ""


@dataclass(slots=True)
class StreamDecoder:
    """Stateful per connection: frames (or TTY bytes) in, entries and the resume point out.

    `resume_from` is where the previous connection (or run) stopped: the first `count` records
    Docker sends from its `since` on were delivered then and are skipped.
    """

    tty: bool
    max_line_bytes: int = 256 * 1024
    resume_from: StreamPosition = StreamPosition(0, 0)
    stats: StreamStats = field(default_factory=StreamStats)
    # Set when the first record after resuming is later than the saved timestamp although records
    # were delivered at it: Docker rotated past `since`, what lay between is gone.
    gap: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    # Unfinished split lines: raw parts, stamped in ns, from the position before their first record.
    _split: SplitLines[int, bytes, StreamPosition] = field(init=False)
    _pending: dict[str, SplitLine[int, bytes, StreamPosition]] = field(init=False)  # _split's, looked up per frame
    _resume: Resume = field(init=False)
    _tty_continues: bool = False  # TTY: the previous record was a 16 KiB part
    _second_ns: dict[bytes, int] = field(default_factory=dict)  # b"2026-11-22T12:00:00" -> its ns
    # Where each entry's first record starts, parallel to the entries of the last feed/finish;
    # kept only for multiline joining (None: off).
    starts: list[StreamPosition] | None = None

    def __post_init__(self) -> None:
        self._resume = Resume(self.resume_from)
        self._split = SplitLines(self.max_line_bytes, bytes)
        self._pending = self._split.by_stream

    @property
    def position(self) -> StreamPosition:
        """Resume point after everything delivered so far (never past an unfinished split line)."""
        start = self._split.earliest_start() if self._pending else None
        return self._resume.position() if start is None else start

    @property
    def cut(self) -> bool:
        """The stream ended inside a frame. Docker ends a stream only between frames; a TTY stream
        has none, and its unfinished tail is a final line (the process exited mid-line)."""
        return not self.tty and bool(self._buffer)

    @property
    def buffered(self) -> int:
        return len(self._buffer) + self._split.buffered()

    def feed(self, data: bytes) -> list[Entry]:
        entries: list[Entry] = []
        if self.starts is not None:
            self.starts = []
        if self.tty:
            self._buffer += data
            self._feed_tty(entries, final=False)
        else:
            self._feed_frames(bytes(self._buffer) + data if self._buffer else data, entries)
        self.stats.beyond_window = self._resume.beyond_window
        return entries

    def finish(self) -> list[Entry]:
        """The stream ended: a TTY tail without newline is a record; unfinished lines are final."""
        entries: list[Entry] = []
        if self.starts is not None:
            self.starts = []
        if self.tty:
            self._feed_tty(entries, final=True)
        self._buffer.clear()
        for stream in list(self._pending):
            self._emit_pending(stream, entries)
        self.stats.beyond_window = self._resume.beyond_window
        return entries

    # -- framing -------------------------------------------------------------------------------
    def _feed_frames(self, buffer: bytes, entries: list[Entry]) -> None:
        pos = 0
        end = len(buffer)
        while end - pos >= _HEADER:
            if not self._pending and self.starts is None and not self._resume.replaying:
                if speedups is not None:
                    pos = self._scan_plain(buffer, pos, entries)
                    if end - pos < _HEADER:
                        break
                taken, plain_end = self._take_plain(buffer, pos, entries)
                if taken:
                    pos = plain_end
                else:
                    # Not all plain lines after all: every frame that starts before plain_end one by one.
                    while pos < plain_end and (length := self._one_frame(buffer, pos, end, entries)):
                        pos += length
                if end - pos < _HEADER or self._pending or self._resume.replaying:
                    continue
            length = self._one_frame(buffer, pos, end, entries)
            if not length:
                break
            pos += length
        self._buffer = bytearray(buffer[pos:])

    def _one_frame(self, buffer: bytes, pos: int, end: int, entries: list[Entry]) -> int:
        """The frame at pos, record by record; its size, or 0 when it is not complete yet."""
        if end - pos < _HEADER:
            return 0
        length = int.from_bytes(buffer[pos + 4 : pos + 8], "big")
        if end - pos - _HEADER < length:
            return 0
        if buffer[pos] == _SYSTEM_ERROR:
            self._docker_error(buffer[pos + _HEADER : pos + _HEADER + length])
            return _HEADER + length
        self._record(buffer[pos + _HEADER : pos + _HEADER + length], _STREAMS.get(buffer[pos], "stdout"), entries)
        return _HEADER + length

    def _scan_plain(self, buffer: bytes, pos: int, entries: list[Entry]) -> int:
        """The plain frames from pos on, by the accelerator (the same entries `_take_plain` makes);
        where it stopped: the frame there is `_take_plain`'s and `_one_frame`'s to judge."""
        assert speedups is not None
        first = len(entries)
        pos, count = speedups.scan_frames(buffer, pos, self.max_line_bytes, entries, Entry)
        if count:
            self._resume.count_many(list(map(_TIMESTAMP, entries[first:])))
            self.stats.records += count
        return pos

    def _take_plain(self, buffer: bytes, pos: int, entries: list[Entry]) -> tuple[bool, int]:
        """The plain frames from pos on (one line each, newline-terminated), all at once.

        Returns whether they were taken and where they end. They stop before the first frame whose
        length disagrees with its match (a 16 KiB part: its match ran into the next frame). Not
        taken (nothing changes, the caller goes record by record up to the end returned) when one
        needs the record-by-record path: a line over the limit, a second that does not parse."""
        rows = _FRAMES.findall(buffer, pos)
        if rows and rows[-1][5]:
            rows.pop()  # from the first frame of another shape on
        if not rows:
            return False, pos
        kinds, sizes, seconds, fractions, texts, _ = zip(*rows, strict=True)
        lengths = array("I", map(len, texts))
        declared = array("I", b"".join(sizes))
        if not _BIG_ENDIAN:
            declared.byteswap()
        expected = array("I", map(add, lengths, repeat(_FRAME_OVERHEAD - _HEADER, len(lengths))))
        if declared != expected:
            # A frame whose length disagrees (a 16 KiB part: its match ran into the next frame):
            # the plain frames before it are still good.
            good = next(index for index, (size, text) in enumerate(zip(declared, expected, strict=True)) if size != text)
            if not good:
                return False, pos + 1  # that frame, one by one
            kinds, seconds, fractions, texts, lengths = kinds[:good], seconds[:good], fractions[:good], texts[:good], lengths[:good]
        plain_end = pos + sum(lengths) + _FRAME_OVERHEAD * len(lengths)
        if max(lengths) > self.max_line_bytes:
            return False, plain_end
        cache = self._second_ns
        for second in set(seconds).difference(cache):
            if not _SECOND.fullmatch(second):
                return False, plain_end
            try:
                cache[second] = parse_timestamp(second.decode("ascii") + ".000000000Z")
            except BadTimestamp:
                return False, plain_end
        if not b"".join(fractions).isdigit():
            return False, plain_end
        stamps = list(map(add, map(cache.__getitem__, seconds), map(int, fractions)))
        if len(cache) > 64:
            cache.clear()  # one entry per second of log; only the current ones matter
        text = b"\n".join(texts)
        if b"\r" in text:  # drop the \r of a \r\n line ending, as _strip does
            text = text.replace(b"\r\n", b"\n")
            if text.endswith(b"\r"):
                text = text[:-1]
        # One decode for all lines: texts hold no newline, and invalid bytes never turn into one.
        lines = text.decode(errors="replace").split("\n")
        self._resume.count_many(stamps)
        self.stats.records += len(stamps)
        streams = repeat("stdout") if b"\x02" not in kinds else map(_STREAM_OF.__getitem__, kinds)
        entries.extend(map(_new_tuple, repeat(Entry), zip(stamps, lines, streams, repeat(None))))
        return True, plain_end

    def _feed_tty(self, entries: list[Entry], final: bool) -> None:
        buffer = self._buffer
        pos = 0
        end = len(buffer)
        while pos < end:
            if not self._tty_continues and buffer[pos] == DOCKER_ERROR[0]:
                taken = self._tty_docker_error(buffer, pos, end, final)
                if taken < 0:
                    break  # wait for more
                if taken:
                    pos = taken
                    continue
            space = buffer.find(b" ", pos, pos + 40)
            if space < 0:
                if final or end - pos >= 40:
                    self._bad(f"TTY record without timestamp: {bytes(buffer[pos:pos + 40])!r}")
                    pos = end
                break
            text_start = space + 1
            limit = text_start + PART_BYTES
            if self._tty_continues:
                # The final part of a split line has no newline: it ends where the next record starts.
                match = _TIMESTAMP_TAIL.search(buffer, text_start, min(limit, end))
                record_end = match.start() if match else -1
            else:
                newline = buffer.find(b"\n", text_start, min(limit, end))
                record_end = newline + 1 if newline >= 0 else -1
            if record_end < 0:
                if end >= limit:
                    record_end = limit  # a 16 KiB part
                elif final:
                    record_end = end
                else:
                    break  # wait for more
            record = bytes(buffer[pos:record_end])
            self._tty_continues = record_end - text_start == PART_BYTES and not record.endswith(b"\n")
            self._record(record, "stdout", entries)
            pos = record_end
        del buffer[:pos]

    def _tty_docker_error(self, buffer: bytearray, pos: int, end: int, final: bool) -> int:
        """A Docker error text at pos: where it ends; 0 when there is none; -1 when more is needed."""
        head = bytes(buffer[pos : pos + len(DOCKER_ERROR)])
        if not DOCKER_ERROR.startswith(head):
            return 0
        if len(head) < len(DOCKER_ERROR):
            return 0 if final else -1
        newline = buffer.find(b"\n", pos, pos + _DOCKER_ERROR_MAX)
        if newline < 0:
            if not final and end - pos < _DOCKER_ERROR_MAX:
                return -1
            newline = min(end, pos + _DOCKER_ERROR_MAX) - 1
        self._docker_error(bytes(buffer[pos : newline + 1]))
        return newline + 1

    def _docker_error(self, text: bytes) -> None:
        self.stats.docker_errors += 1
        self.stats.last_docker_error = text.rstrip(b"\r\n").decode(errors="replace")[:300]

    # -- records -------------------------------------------------------------------------------
    def _record(self, payload: bytes, stream: str, entries: list[Entry]) -> None:
        space = payload.find(b" ", 0, 40)
        try:
            if space < 0:
                raise BadTimestamp(f"record without timestamp: {payload[:40]!r}")
            ts_ns = parse_timestamp(payload[:space].decode("ascii"))
        except (BadTimestamp, UnicodeDecodeError) as err:
            self._bad(str(err))
            return
        self.stats.records += 1
        if self._skip(ts_ns):
            return
        before = self._resume.position()
        self._resume.count(ts_ns)
        text = payload[space + 1 :]
        is_part = len(text) == PART_BYTES and not text.endswith(b"\n")
        pending = self._pending.get(stream)
        if pending is not None:
            self._split.add(pending, text)  # a cut line is counted when it is delivered
            if not is_part:
                self._emit_pending(stream, entries)
            return
        if is_part:
            self._split.open(stream, ts_ns, before, text)
            return
        entries.append(_new_tuple(Entry, (ts_ns, self._line(text), stream, None)))
        if self.starts is not None:
            self.starts.append(before)

    def _skip(self, ts_ns: int) -> bool:
        """Records the previous connection delivered already."""
        resume = self._resume
        skip = resume.skip(ts_ns)
        self.stats.skipped_on_resume = resume.skipped
        if resume.gap:
            self.gap, resume.gap = True, False
        return skip

    def _emit_pending(self, stream: str, entries: list[Entry]) -> None:
        pending = self._split.pop(stream)
        if pending.truncated:
            self.stats.truncated_lines += 1
            entries.append(Entry(pending.stamp, _strip(pending.parts[0]).decode(errors="ignore"), stream))
        else:
            entries.append(Entry(pending.stamp, self._line(b"".join(pending.parts)), stream))
        if self.starts is not None:
            self.starts.append(pending.start)

    def _line(self, text: bytes) -> str:
        text = _strip(text)
        if len(text) > self.max_line_bytes:
            self.stats.truncated_lines += 1
            return text[: self.max_line_bytes].decode(errors="ignore")
        return text.decode(errors="replace")

    def _bad(self, why: str) -> None:
        self.stats.bad_records += 1
        self.stats.last_error = why


def _strip(text: bytes) -> bytes:
    """Drop the line ending: `\\n`, `\\r\\n`, or a TTY part's lone `\\r` (its `\\n` was the split)."""
    if text.endswith(b"\n"):
        text = text[:-1]
    if text.endswith(b"\r"):
        text = text[:-1]
    return text


def since_param(position: StreamPosition) -> str:
    """`since` for the Engine API: seconds and 9 zero-padded nanosecond digits (inclusive)."""
    seconds, nanos = divmod(position.ts_ns, 1_000_000_000)
    return f"{seconds}.{nanos:09d}"
