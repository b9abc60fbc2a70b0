"""Pure: Docker json-file records -> entries. No I/O.

Facts this relies on (see design notes):
- one record per line: {"log":"...\n","stream":"stdout","time":"2026-11-22T12:37:12.709634378Z"}
  (+ "attrs" with log-opts labels/env); the fraction of `time` has 1 to 9 digits;
- output lines over 16 KiB are split into records without "\n" that share stream and time;
- a record without "\n" that is not followed by a part of the same line is a final line whose
  process exited mid-line; it is delivered when the next record shows it ended, or at drain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import msgspec

from collector.pipeline.entry import Entry
from collector.sources.splitlines import SplitLine, SplitLines
from collector.speedups import speedups
from collector.timefmt import BadTimestamp, parse_timestamp

# Entry(...) at C speed: a NamedTuple's own constructor is a Python function, and the parser makes
# one entry per log line (about 0.14 µs saved per line).
_new_tuple = tuple.__new__
_NEWLINE = re.compile(b"\n")


class Record(msgspec.Struct):
    log: str = ""
    stream: str = "stdout"
    time: str = ""  # `attrs` is not decoded: the same for every record, the registry takes it from the inspect


_decode_one = msgspec.json.Decoder(Record).decode
_decode_many = msgspec.json.Decoder(list[Record]).decode

_FRACTION_SCALE = [10 ** (9 - digits) for digits in range(10)]  # ns per unit of a fraction of n digits


@dataclass(slots=True)
class ParseStats:
    records: int = 0
    bad_records: int = 0
    truncated_lines: int = 0
    last_error: str = ""


@dataclass(slots=True)
class JsonFileParser:
    """Stateful per file: joins split lines across chunks. Feed it whole records (ending in newline)."""

    max_line_bytes: int = 256 * 1024
    stats: ParseStats = field(default_factory=ParseStats)
    # Unfinished split lines: parts as text, stamped with their record's time text, from a file offset.
    _split: SplitLines[str, str, int] = field(init=False)
    _pending: dict[str, SplitLine[str, str, int]] = field(init=False)  # _split's, looked up per record
    # Where each entry's first record starts, parallel to the entries of the last feed/flush; kept
    # only for multiline joining (None: off, no cost).
    starts: list[int] | None = None
    _offsets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._split = SplitLines(self.max_line_bytes, str)
        self._pending = self._split.by_stream

    def feed(self, data: bytes, start_offset: int) -> tuple[list[Entry], int]:
        """Parse complete records; returns entries and the offset it is safe to resume from.

        `data` holds whole records, each ending in b"\\n", starting at file offset `start_offset`.
        The resume offset stops at the first record of a line still unfinished.
        """
        if self.starts is None and speedups is not None:
            return self._feed_accelerated(data, start_offset)
        entries: list[Entry] = []
        if self.starts is not None:
            self.starts = []
            # Record i starts at start_offset + _offsets[i].
            self._offsets = [0, *(match.end() for match in _NEWLINE.finditer(data, 0, max(0, len(data) - 1)))]
        if not data:
            return entries, self.resume_offset(start_offset)
        body = data[:-1] if data.endswith(b"\n") else data
        try:
            # Raw newlines only separate records (inside JSON strings they are escaped),
            # so one decode of the whole chunk as an array replaces thousands of calls.
            # (A lone empty line would decode as an empty array: it is a bad record, as elsewhere.)
            records = _decode_many(b"[" + body.replace(b"\n", b",") + b"]") if body else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            records = None
        if records is not None:
            if self.starts is None:
                self._take_all(records, entries, start_offset, data)
            else:
                for index, record in enumerate(records):
                    self._take(record, entries, start_offset, data, index)
        else:
            offset = start_offset
            for index, raw in enumerate(body.split(b"\n")):
                try:
                    record = _decode_one(raw)
                except (msgspec.DecodeError, msgspec.ValidationError) as err:
                    self.stats.bad_records += 1
                    self.stats.last_error = f"bad json-file record at offset {offset}: {err}"
                else:
                    self.stats.records += 1
                    self._take(record, entries, start_offset, data, index)
                offset += len(raw) + 1
        if records is not None:
            self.stats.records += len(records)
        return entries, self.resume_offset(start_offset + len(data))

    def _feed_accelerated(self, data: bytes, start_offset: int) -> tuple[list[Entry], int]:
        """`feed` with the C loop taking the usual records (while no split line is open); each other
        record goes through `_take` alone, as the Python loop would take it."""
        assert speedups is not None
        entries: list[Entry] = []
        scan, stats, limit = speedups.scan_records, self.stats, self.max_line_bytes
        position, size = 0, len(data)
        while position < size:
            if not self._pending:
                position, count = scan(data, position, limit, entries, Entry)
                stats.records += count
                if position >= size:
                    break
            end = data.find(b"\n", position)
            end = size if end < 0 else end
            try:
                record = _decode_one(data[position:end])
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                stats.bad_records += 1
                stats.last_error = f"bad json-file record at offset {start_offset + position}: {err}"
            else:
                stats.records += 1
                self._take(record, entries, start_offset + position, data[position:end], 0)
            position = end + 1
        return entries, self.resume_offset(start_offset + size)

    def resume_offset(self, end_offset: int) -> int:
        start = self._split.earliest_start() if self._pending else None
        return end_offset if start is None else start

    def flush(self) -> list[Entry]:
        """End of input (the container died and the file is drained): unfinished lines are final."""
        entries: list[Entry] = []
        if self.starts is not None:
            self.starts = []
        for stream in list(self._pending):
            self._emit_pending(stream, entries)
        return entries

    def _take_all(self, records: list[Record], entries: list[Entry], start_offset: int, data: bytes) -> None:
        """`_take` for every record, with the usual record (a whole short line, Docker's time with a
        1-9 digit fraction and Z, in a second seen just before) done inline: this loop runs once per
        log line."""
        append = entries.append
        pending = self._pending
        take = self._take
        longest = self.max_line_bytes // 4  # a str of at most this many characters fits in max_line_bytes
        second = "-"  # "2026-11-22T12:37:12." of the last usual record (no time starts with "-"), and its ns
        second_ns = 0
        for index, record in enumerate(records):
            log = record.log
            time = record.time
            if (pending or log[-1:] != "\n" or len(log) > longest or time[-1:] != "Z"
                    or not (fraction := time[20:-1]).isdigit() or len(fraction) > 9):
                take(record, entries, start_offset, data, index)
                continue
            if not time.startswith(second):
                try:
                    if time[19] != ".":
                        raise BadTimestamp(time)
                    second_ns = parse_timestamp(time[:20] + "0Z")
                except BadTimestamp:
                    take(record, entries, start_offset, data, index)  # counts it
                    continue
                second = time[:20]
            line = log[:-1]
            if line[-1:] == "\r":
                line = line[:-1]
            # Docker drops the fraction's trailing zeros: ".7096" is 709,600,000 ns.
            nanos = int(fraction) if len(fraction) == 9 else int(fraction) * _FRACTION_SCALE[len(fraction)]
            append(_new_tuple(Entry, (second_ns + nanos, line, record.stream, None)))

    def _take(self, record: Record, entries: list[Entry], start_offset: int, data: bytes, index: int) -> None:
        log = record.log
        stream = record.stream
        complete = log.endswith("\n")
        if complete:
            log = log[:-2] if log.endswith("\r\n") else log[:-1]
        pending = self._pending.get(stream)
        if pending is not None:
            if pending.stamp == record.time:
                if self._split.add(pending, log):
                    self.stats.truncated_lines += 1
                if complete:
                    self._emit_pending(stream, entries)
                return
            # A different time: the pending line was final (its process exited mid-line).
            self._emit_pending(stream, entries)
        if not complete:
            if self._split.open(stream, record.time, start_offset + _offset_of_record(data, index), log):
                self.stats.truncated_lines += 1
            return
        try:
            ts_ns = parse_timestamp(record.time)
        except BadTimestamp as err:
            self._bad(str(err))
            return
        if len(log) * 4 > self.max_line_bytes:
            log = self._limit(log)
        entries.append(_new_tuple(Entry, (ts_ns, log, stream, None)))  # attrs: the same for every record, from the inspect
        if self.starts is not None:
            self.starts.append(start_offset + self._offsets[index])

    def _emit_pending(self, stream: str, entries: list[Entry]) -> None:
        pending = self._split.pop(stream)
        try:
            ts_ns = parse_timestamp(pending.stamp)
        except BadTimestamp as err:
            self._bad(str(err))
            return
        line = "".join(pending.parts)
        if not pending.truncated and len(line) * 4 > self.max_line_bytes:
            line = self._limit(line)
        entries.append(_new_tuple(Entry, (ts_ns, line, stream, None)))
        if self.starts is not None:
            self.starts.append(pending.start)

    def _limit(self, line: str) -> str:
        raw = line.encode()
        if len(raw) <= self.max_line_bytes:
            return line
        self.stats.truncated_lines += 1
        return raw[: self.max_line_bytes].decode(errors="ignore")

    def _bad(self, why: str) -> None:
        self.stats.bad_records += 1
        self.stats.last_error = why


def _offset_of_record(data: bytes, index: int) -> int:
    offset = 0
    for _ in range(index):
        offset = data.index(b"\n", offset) + 1
    return offset
