"""Docker's split lines put back together, for both decoders (json-file records, API stream records).

Docker writes an output line over 16 KiB as several records of the same stream. A line stays open
here, per stream, until its last part arrives; while one is open, the decoder's resume point stays
before its first record. An endless line is cut at `max_line_bytes` as its parts arrive, so memory
stays bounded, and its remaining parts are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

StampT = TypeVar("StampT")  # the decoder's timestamp: json-file's time text, the stream's ns
TextT = TypeVar("TextT", str, bytes)  # json-file parts are decoded text, the stream's are raw bytes
StartT = TypeVar("StartT")  # the decoder's resume point: a file offset, a StreamPosition


@dataclass(slots=True)
class SplitLine(Generic[StampT, TextT, StartT]):
    """An unfinished line of one stream: the parts seen so far."""

    stamp: StampT
    parts: list[TextT]
    size: int  # in characters (str) or bytes
    start: StartT  # where its first record starts: the resume point while it is open
    truncated: bool = False


class SplitLines(Generic[StampT, TextT, StartT]):
    """The open split lines of one decoder, by stream."""

    __slots__ = ("by_stream", "max_line_bytes", "_bytes_per_unit")

    def __init__(self, max_line_bytes: int, text: type[TextT]) -> None:
        self.by_stream: dict[str, SplitLine[StampT, TextT, StartT]] = {}
        self.max_line_bytes = max_line_bytes
        # A character is at most 4 bytes in UTF-8: below max_line_bytes / 4 characters, no encoding.
        self._bytes_per_unit = 4 if text is str else 1

    def open(self, stream: str, stamp: StampT, start: StartT, first: TextT) -> bool:
        """A new line on `stream` whose first part is `first`; True when that part alone was cut."""
        line: SplitLine[StampT, TextT, StartT] = SplitLine(stamp, [], 0, start)
        self.by_stream[stream] = line
        return self.add(line, first)

    def add(self, line: SplitLine[StampT, TextT, StartT], part: TextT) -> bool:
        """One more part; True when this part made the line too long, so it was cut here (once)."""
        if line.truncated:
            return False
        line.parts.append(part)
        line.size += len(part)
        if line.size * self._bytes_per_unit <= self.max_line_bytes:
            return False
        cut = self._cut(line.parts)
        if cut is None:
            return False
        # Keep memory bounded for an endless line: cut it now, skip its remaining parts.
        line.parts = [cut]
        line.truncated = True
        return True

    def pop(self, stream: str) -> SplitLine[StampT, TextT, StartT]:
        """The line of `stream`, closed: its last part came, or the stream showed it was final."""
        return self.by_stream.pop(stream)

    def earliest_start(self) -> StartT | None:
        """Where the oldest open line starts (None: none is open)."""
        if not self.by_stream:
            return None
        return min(line.start for line in self.by_stream.values())  # type: ignore[type-var]  # offsets, positions: ordered

    def buffered(self) -> int:
        return sum(line.size for line in self.by_stream.values())

    def _cut(self, parts: list[TextT]) -> TextT | None:
        """The line cut to max_line_bytes; None when it fits."""
        limit = self.max_line_bytes
        if isinstance(parts[0], str):
            raw = "".join(parts).encode()
            return raw[:limit].decode(errors="ignore") if len(raw) > limit else None
        joined = b"".join(parts)
        return joined[:limit] if len(joined) > limit else None
