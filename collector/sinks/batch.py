"""What the Loki sink sends: a Push (entries by stream, each stream's Piece) and the Batch the
accumulator fills from queued chunks. Pure data; no I/O.

A Piece is one container's entries of one stream in one batch, with the chunks they came from.
Whatever happens to a push (split in halves, one stream set aside because Loki throttled it,
each stream resent alone), every part of a Piece is held by exactly one push or throttle
segment; the Piece is resolved when its last part is stored or counted as dropped, and only then
do its chunks count as delivered (`acks.AckLedger`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter

from collector.pipeline.entry import Chunk, Entry, Origin

StreamKey = tuple[int, str]  # (id of the Origin, stream name): one Loki stream of one batch
# Entry fields read at C speed over whole chunks (map/sum/set), not in a Python loop per line.
LINE, STREAM_NAME, ATTRS = itemgetter(1), itemgetter(2), itemgetter(3)


def line_bytes(chunk: Chunk) -> int:
    """What batch_max_bytes bounds: the chunk's line characters."""
    return sum(map(len, map(LINE, chunk.entries)))


@dataclass(eq=False, slots=True)
class Piece:
    chunks: list[Chunk] = field(default_factory=list)
    parts: int = 1  # pushes or segments holding some of its entries, not yet resolved

    def divided(self) -> Piece:
        """One more holder shares this piece (a split): returns it for chaining."""
        self.parts += 1
        return self


@dataclass(slots=True)
class Push:
    """Entries of some streams, and their encoded request body once encoded."""

    streams: dict[StreamKey, list[Entry]] = field(default_factory=dict)
    origins: dict[StreamKey, Origin] = field(default_factory=dict)
    pieces: dict[StreamKey, Piece] = field(default_factory=dict)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    with_metadata: bool = False

    @property
    def entries(self) -> int:
        return sum(len(entries) for entries in self.streams.values())

    def labels_of(self, key: StreamKey) -> dict[str, str]:
        """The stream's labels as Loki sees them (it drops empty values)."""
        labels = {**self.origins[key].labels, "stream": key[1]}
        return {name: value for name, value in labels.items() if value != ""}

    def label_sets(self) -> dict[StreamKey, dict[str, str]]:
        return {key: self.labels_of(key) for key in self.streams}

    def only(self, key: StreamKey) -> Push:
        """A push of this one stream (it takes over the stream's part of its piece)."""
        return Push({key: self.streams[key]}, {key: self.origins[key]}, {key: self.pieces[key]})

    def halves(self) -> tuple[Push, Push]:
        """Two pushes of about half the entries each (413: the body was too large)."""
        flat = [(key, entry) for key, entries in self.streams.items() for entry in entries]
        middle = len(flat) // 2
        first, second = self._of(flat[:middle]), self._of(flat[middle:])
        for key in first.streams.keys() & second.streams.keys():
            self.pieces[key].divided()  # a stream cut in two: both halves hold a part
        return first, second

    def _of(self, pairs: list[tuple[StreamKey, Entry]]) -> Push:
        part = Push()
        for key, entry in pairs:
            part.streams.setdefault(key, []).append(entry)
            part.origins[key] = self.origins[key]
            part.pieces[key] = self.pieces[key]
        return part


@dataclass(slots=True)
class Batch:
    push: Push = field(default_factory=Push)
    chunks: int = 0
    line_bytes: int = 0  # what batch_max_bytes bounds
    entries: int = 0
    oldest: float = 0.0  # monotonic time its first chunk was taken from the queue
    newest_ts_ns: list[int] = field(default_factory=list)  # each chunk's last entry, for the latency observer

    @property
    def streams(self) -> dict[StreamKey, list[Entry]]:
        return self.push.streams

    def add(self, chunk: Chunk, size: int | None = None) -> int:
        """File the chunk's entries (`size`: their line_bytes, when known) under their streams;
        returns how many pieces now hold them."""
        self.chunks += 1
        entries = chunk.entries
        if not entries:
            return 0
        self.entries += len(entries)
        self.newest_ts_ns.append(entries[-1].ts_ns)
        self.line_bytes += line_bytes(chunk) if size is None else size
        names = set(map(STREAM_NAME, entries))
        if len(names) == 1:  # the usual chunk: one stream, no loop per entry
            self._entries_of(chunk, entries[0][2]).extend(entries)
            return 1
        current_name = ""
        current: list[Entry] = []
        for entry in entries:
            if entry[2] != current_name:  # look up only on a switch of stream
                current_name = entry[2]
                current = self._entries_of(chunk, current_name)
            current.append(entry)
        return len(names)

    def _entries_of(self, chunk: Chunk, name: str) -> list[Entry]:
        """The batch's entries of this chunk's container stream `name` (made on first use); the
        chunk joins that stream's piece."""
        push = self.push
        key = (id(chunk.origin), name)
        entries = push.streams.get(key)
        if entries is None:
            entries = push.streams[key] = []
            push.origins[key] = chunk.origin
            push.pieces[key] = Piece()
        chunks = push.pieces[key].chunks
        if not chunks or chunks[-1] is not chunk:
            chunks.append(chunk)
        return entries
