"""A lane's spool that moves a held container's records out of the shared segments, so one slow
stream neither holds back the others' read-back nor pins the segments it shares with them.

Without it: the lane's segments hold every container's records, read back in order. When Loki
throttles one container's stream, the sink paces it and pauses the container at the queue, but
its records lie among everyone else's; handed to the sink they pile up in its throttle until the
sink stops taking chunks (its bound), and the reader stops with it. Every other container's
backlog went out at the throttled stream's rate, and no segment was deleted before its throttled
records were delivered.

Compaction by moving aside: when the reader meets a record of a container the sink holds (paused),
it does not hand it to the queue; it copies the record's bytes to that container's own segments
(`held/<id in hex>-<segment>-<offset>/`, a Spool of their own, written and fsynced by the reader
before it returns). The original is resolved once the copy is durable and the cursor saved, so a
shared segment is deleted once the others' records in it are delivered. From then on every record
of that container the reader meets goes there too, until all of them are delivered and the
directory is removed: its own segments hold its records in the order the reader met them, with
none handed in between. They are read back, oldest first, whenever the container is not held, on
each read before the shared segments.

Each record is moved at most once (own segments are never moved again): the extra writing is the
held containers' share of the backlog (`forwarded_bytes`). The moved records count in the lane's
max_bytes; moving may go one own segment beyond it (the originals are freed as the reader passes),
so a full spool does not stop the reader. Without room even so, a container with nothing moved yet
is handed to the sink as before (the sink's bound holds it); one with records moved makes the
reader wait (handed, it would go before its older records) until room appears or they drain. The
lane spills while any own segments are unread, so a held container's new records follow them.

After a crash: a directory is made (and fsynced) before its first copy, and its name says where
that first record lay. A record of the container older than it (handed to the sink before, not yet
delivered) is handed again at once; the own segments are read back only once the reader has passed
that place. A copy made between the last cursor save and the crash is sent once more (a duplicate).

What the sink holds (`insure`): as the lane starts spilling (and at shutdown, after a flush that
timed out), the chunks the sink took from sources and Loki does not have yet are copied here first,
before what is queued. Durable, they no longer pin their containers' positions: positions advance
in read order, so one chunk held in a retried push kept a container's position for the whole
outage, and a kill -9 then re-read all of it from the log file (sent twice), or lost that chunk if
Docker had rotated the file away. The sink goes on sending its own; the reader never hands the copy
and resolves it once the original is delivered. After a crash, the copy is sent, in read order.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import os
from collections.abc import Callable

from collector.durable import fsync_directory
from collector.pipeline.entry import Chunk, Position, SpoolMark
from collector.spool.cursor import CURSOR_NAME
from collector.spool.format import RECORD_HEADER_BYTES
from collector.spool.settings import Route, SpoolSettings
from collector.spool.store import Spool

log = logging.getLogger(__name__)

HELD = "held"  # under a lane's directory: one directory per container whose records were moved aside
OWN_SEGMENT_BYTES = 1024 * 1024  # smaller than shared segments: a slow stream frees its disk sooner

Place = tuple[int, int]  # (segment, offset) in the shared segments
Insured = tuple[str, Position, int]  # container, position, bytes read: a chunk and its copy (the ack ledger empties entries)


@dataclasses.dataclass(slots=True)
class Aside:
    spool: Spool  # the container's own segments
    start: Place  # where its first record lay: the container's records before it go first


class LaneSpool(Spool):
    def __init__(self, settings: SpoolSettings, on_durable: Callable[[list[Chunk]], None]) -> None:
        super().__init__(settings, on_durable)
        self._held: Callable[[str], bool] = lambda container_id: False
        self._notify: Callable[[], None] = lambda: None
        self._aside: dict[str, Aside] = {}  # by container id; bounded by the containers held while read back
        self._own_segment_bytes = min(settings.segment_bytes, OWN_SEGMENT_BYTES)
        # Copies of chunks the sink holds -> where the reader met the copy (None: not yet); bounded by
        # what the sink held when the lane started spilling. And those whose original was delivered first.
        self._insured: dict[Insured, SpoolMark | None] = {}
        self._insured_done: set[Insured] = set()

    def attach(self, on_change: Callable[[], None], held: Callable[[str], bool] | None = None) -> None:
        """`held(container_id)`: the sink paused it (its stream is throttled): its records are moved aside."""
        self._notify = on_change
        if held is not None:
            self._held = held
        super().attach(self._changed)

    def _changed(self) -> None:
        self._waiting = False  # room may have appeared, or records drained: the reader looks again
        self._notify()

    @property
    def aside_containers(self) -> int:
        return len(self._aside)

    # -- startup -------------------------------------------------------------------------------------
    def open(self) -> None:
        super().open()
        try:
            names = sorted(os.listdir(os.path.join(self.directory, HELD)))
        except FileNotFoundError:
            return
        except OSError as err:
            self._failed("cannot use the spool directory", err)
            return
        for name in names:
            found = _parse_name(name)
            if found is None or found[0] in self._aside:
                continue
            container_id, start = found
            self._own(container_id, start, name)
            self._prune(container_id)

    # -- what the queue asks ---------------------------------------------------------------------------
    @property
    def bytes(self) -> int:
        return super().bytes + sum(aside.spool.bytes for aside in self._aside.values())

    @property
    def segments(self) -> int:
        return super().segments + sum(aside.spool.segments for aside in self._aside.values())

    def oldest_age(self, now_ns: int) -> float:
        return max([super().oldest_age(now_ns), *(aside.spool.oldest_age(now_ns) for aside in self._aside.values())])

    def has_unread(self) -> bool:
        """Records the reader can take now (not those of a held container, nor past a record it waits at)."""
        return (super().has_unread() and not self._waiting) or any(map(self._readable, self._aside))

    def caught_up(self) -> bool:
        return super().caught_up() and all(aside.spool.caught_up() for aside in self._aside.values())

    def _readable(self, container_id: str) -> bool:
        aside = self._aside[container_id]
        return aside.spool.has_unread() and not self._held(container_id) and self._passed(aside.start)

    def _passed(self, place: Place) -> bool:
        """The reader has read the shared segments beyond `place`."""
        segment = self._first_unread()
        return segment is None or (segment.seq, segment.read_at) > place

    # -- reading back ----------------------------------------------------------------------------------
    async def read(self, max_bytes: int) -> list[Chunk]:
        """Own segments of containers not held first (older than what of theirs the shared ones
        still hold), then the shared segments, moving held containers' records aside; what was
        moved is durable (and its originals resolved) on return."""
        out: list[Chunk] = []
        taken = 0
        for container_id in [container_id for container_id in self._aside if self._readable(container_id)]:
            if taken >= max_bytes:
                break
            chunks = await self._aside[container_id].spool.read(max_bytes - taken)
            out += chunks
            taken += sum(chunk.nbytes for chunk in chunks)
        if taken < max_bytes:
            out += await super().read(max_bytes - taken)
        moved = [aside.spool for aside in self._aside.values() if aside.spool.pending_bytes]
        for spool in moved:
            await spool.flush()  # durable: the originals are resolved (on_durable)
        if moved:
            await super().save_cursor()  # at once: a crash now does not send the moved records twice
        for container_id in list(self._aside):
            self._prune(container_id)
        return out

    def _route(self, chunk: Chunk, payload: builtins.bytes) -> Route:
        mark = chunk.spooled
        assert mark is not None
        key = _insured_key(chunk) if self._insured else None
        if key is not None and key in self._insured:  # a copy of what the sink holds: never handed
            if key in self._insured_done:
                self._settle(key, mark)
            else:
                self._insured[key] = mark
            return Route.ASIDE
        container_id = chunk.origin.container_id
        self._prune(container_id)  # all delivered: its records may be handed again (never between moved ones)
        aside = self._aside.get(container_id)
        if aside is not None and (mark.segment, mark.offset) < aside.start:
            return Route.HAND  # handed before its records were moved (a restart reads it again): older than them
        if aside is None and not self._held(container_id):
            return Route.HAND
        size = RECORD_HEADER_BYTES + len(payload)
        if self._room_aside(size):
            if aside is None:
                aside = self._own(container_id, (mark.segment, mark.offset))
            if not aside.spool.problem:
                aside.spool.append(chunk, payload)
                self.stats.forwarded_records += 1
                self.stats.forwarded_bytes += size
                return Route.ASIDE
            self._prune(container_id)  # made, but unusable (and empty): not kept
        return Route.HAND if container_id not in self._aside else Route.WAIT

    def _room_aside(self, nbytes: int) -> bool:
        pending = self.pending_bytes + sum(aside.spool.pending_bytes for aside in self._aside.values())
        return (not self._closed and self.bytes + nbytes <= self.settings.max_bytes + self._own_segment_bytes
                and self._free - pending - nbytes >= self.settings.headroom_bytes)

    def _moved(self, chunks: list[Chunk]) -> None:
        """Copies are durable: their originals in the shared segments need no more sending."""
        for chunk in chunks:
            assert chunk.spooled is not None
            super().delivered(chunk.spooled)

    # -- own segments ------------------------------------------------------------------------------------
    def _own(self, container_id: str, start: Place, name: str = "") -> Aside:
        """The container's own segments (made, or found at startup under `name`)."""
        held = os.path.join(self.directory, HELD)
        name = name or f"{container_id.encode().hex()}-{start[0]}-{start[1]}"
        settings = dataclasses.replace(self.settings, path=os.path.join(held, name), segment_bytes=self._own_segment_bytes,
                                       chain=container_id)
        spool = Spool(settings, self._moved, self._origins, self.stats)
        spool.attach(self._changed)
        spool.open()  # makes the directory
        try:
            fsync_directory(held)  # the directory, and with it where the first record lay, before any copy
            fsync_directory(self.directory)
        except OSError as err:
            spool.problem = f"cannot make the directory durable: {err}"
        aside = self._aside[container_id] = Aside(spool, start)
        return aside

    def _prune(self, container_id: str) -> None:
        """Everything moved aside for the container is delivered: its directory goes."""
        aside = self._aside.get(container_id)
        if aside is None or aside.spool.segments or not aside.spool.caught_up():
            return
        aside.spool.abandon()
        del self._aside[container_id]
        try:
            for name in (CURSOR_NAME, f"{CURSOR_NAME}.tmp"):
                if os.path.exists(path := os.path.join(aside.spool.directory, name)):
                    os.unlink(path)
            if os.path.isdir(aside.spool.directory):
                os.rmdir(aside.spool.directory)
        except OSError as err:  # left behind: found empty at the next start
            log.warning("cannot remove a spool directory", extra={"path": aside.spool.directory, "error": str(err)})

    # -- what the sink holds -----------------------------------------------------------------------------
    def insure(self, chunks: list[Chunk]) -> int:
        """Copy what the sink holds (read order per container), ahead of anything appended after;
        a container none of whose chunks fit is left out whole (its position stays as it was)."""
        left_out: set[str] = set()
        copied = 0
        for chunk in chunks:
            key = _insured_key(chunk)
            container_id = chunk.origin.container_id
            if key is None or key in self._insured or container_id in left_out:
                continue
            if self.problem or self._closed or self.bytes + chunk.nbytes > self.settings.max_bytes:
                left_out.add(container_id)
                continue
            self._insured[key] = None
            self.append(chunk)  # not bound by max_pending_bytes: at most what the sink holds
            copied += 1
        return copied

    def original_delivered(self, chunk: Chunk) -> None:
        """The sink delivered (or counted as dropped) a chunk read from a source: its copy, if any, is done."""
        key = _insured_key(chunk)
        if key is None or key not in self._insured:
            return
        mark = self._insured[key]
        if mark is None:
            self._insured_done.add(key)  # settled when the reader meets the copy
        else:
            self._settle(key, mark)

    def _settle(self, key: Insured, mark: SpoolMark) -> None:
        del self._insured[key]
        self._insured_done.discard(key)
        super().delivered(mark)

    # -- delivery and the end --------------------------------------------------------------------------
    def delivered(self, mark: SpoolMark) -> None:
        if not mark.chain:
            super().delivered(mark)
            return
        aside = self._aside.get(mark.chain)
        if aside is not None:
            aside.spool.delivered(mark)
            self._cursor_dirty = True  # the run loop saves the own segments' cursors with the lane's
            self._prune(mark.chain)

    async def save_cursor(self) -> None:
        await super().save_cursor()
        for aside in list(self._aside.values()):
            await aside.spool.save_cursor()

    async def close(self) -> None:
        """Own segments first: copies durable, their originals resolved, then the lane's cursor."""
        for aside in list(self._aside.values()):
            await aside.spool.close()
        await super().close()

    def abandon(self) -> None:
        for aside in self._aside.values():
            aside.spool.abandon()
        super().abandon()


def _insured_key(chunk: Chunk) -> Insured | None:
    return None if chunk.position is None else (chunk.origin.container_id, chunk.position, chunk.nbytes)


def _parse_name(name: str) -> tuple[str, Place] | None:
    """`<container id in hex>-<segment>-<offset>` -> (container id, place); None for anything else."""
    parts = name.split("-")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    try:
        return bytes.fromhex(parts[0]).decode(), (int(parts[1]), int(parts[2]))
    except ValueError:
        return None
