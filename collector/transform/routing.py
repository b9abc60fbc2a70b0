"""Which Loki stream each entry of a chunk goes to: the container's labels, plus labels taken
from line fields (`processing.field_labels`), through the cardinality guard.

Per source, per chunk: without field labels a chunk stays one chunk (one guard lookup); with
them its entries are grouped by their label values, each group a chunk of its own under an
origin made once per label set. Only the last chunk carries the position, so acknowledgements
(in read order) still advance it once everything before it is delivered."""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.pipeline.entry import Chunk, Entry, Origin, Position
from collector.transform.guard import StreamGuard


def chunks_of(origin: Origin, entries: list[Entry], nbytes: int, position: Position | None,
              labeler: StreamLabeler | None) -> list[Chunk]:
    """What a source queues for these entries: one chunk, or the labeler's (the last one with the position)."""
    if labeler is None:
        return [Chunk(origin, entries, nbytes, position)]
    return labeler.chunks(origin, entries, nbytes, position)


@dataclass(slots=True)
class StreamLabeler:
    guard: StreamGuard
    tenant: str
    foldable: frozenset[str]
    field_labels: tuple[str, ...] = ()
    _origins: dict[tuple[tuple[str, str], ...], Origin] = field(default_factory=dict)  # one source: one container

    def chunks(self, origin: Origin, entries: list[Entry], nbytes: int, position: Position | None) -> list[Chunk]:
        if not self.field_labels or not entries:
            return [Chunk(self._origin(origin, origin.labels), entries, nbytes, position)]
        groups: dict[tuple[str, ...], list[Entry]] = {}
        names = self.field_labels
        for entry in entries:
            attrs = entry[3]
            if attrs and any(name in attrs for name in names):
                values = tuple(attrs.get(name, "") for name in names)
                rest = {key: value for key, value in attrs.items() if key not in names}
                entry = Entry(entry[0], entry[1], entry[2], rest or None)
            else:
                values = ("",) * len(names)
            groups.setdefault(values, []).append(entry)
        chunks = []
        for values, grouped in groups.items():
            labels = {**origin.labels, **{name: value for name, value in zip(names, values, strict=True) if value}}
            chunks.append(Chunk(self._origin(origin, labels), grouped, 0, None))
        chunks[0].nbytes = nbytes
        chunks[-1].position = position
        return chunks

    def origin_count(self) -> int:
        """Label sets remembered (bounded: cleared past 256)."""
        return len(self._origins)

    def _origin(self, base: Origin, labels: dict[str, str]) -> Origin:
        admitted = self.guard.admit(self.tenant, labels, self.foldable)
        if admitted is base.labels:
            return base
        key = tuple(sorted(admitted.items()))
        origin = self._origins.get(key)
        if origin is None:
            if len(self._origins) > 256:
                self._origins.clear()  # rare label sets, names before a rename: made again on demand
            origin = self._origins[key] = Origin(base.container_id, admitted, base.metadata, base.tenant)
        return origin
