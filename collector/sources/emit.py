"""The last steps of every source, whatever it reads: multiline joining, the per-line rules, and
the chunks onto the queue."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from collector.pipeline.entry import Entry, Origin, Position
from collector.pipeline.queue import ChunkQueue
from collector.sources.source import SourceStats
from collector.transform.lines import LineProcessor
from collector.transform.multiline import Joiner
from collector.transform.routing import StreamLabeler, chunks_of

_At = TypeVar("_At")


class Emitting(Protocol):
    """What a source carries for its emission (the registry sets the last three)."""

    origin: Origin
    stats: SourceStats
    processor: LineProcessor | None
    joiner: Joiner | None
    labeler: StreamLabeler | None


def joined(source: Emitting, entries: list[Entry], starts: list[Any] | None, resume: _At, final: bool) -> tuple[list[Entry], _At]:
    """The entries complete now and where to resume: with multiline joining, an entry still open
    is held back (all of them end when `final`) and the resume point stays before its start."""
    if source.joiner is None:
        return entries, resume
    return source.joiner.take(entries, starts if entries and starts is not None else [], resume, final)


def emit(source: Emitting, queue: ChunkQueue, entries: list[Entry], nbytes: int, position: Position) -> None:
    """The per-line rules, then the chunks on the queue, the last one with `position`. No await:
    the source waited for room() before its read (a flush at a file's or stream's end, a pending
    line, may add a little over)."""
    if source.processor is not None:
        entries = source.processor.process(entries)  # dropped lines still move the position
    for chunk in chunks_of(source.origin, entries, nbytes, position, source.labeler):
        queue.put_nowait(chunk)
    if entries:
        source.stats.last_entry_ns = entries[-1].ts_ns
