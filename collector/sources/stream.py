"""Engine API stream sources: one task per container whose logs only Docker can give back.

Every read is bounded by a timeout and the task is cancellable at any await, so no read can hang
forever and no socket outlives its reader (the old streaming collector leaked both). The reader
resumes at (timestamp, records delivered at it) after any end of its connection: a proxy closing
an idle stream, dockerd restarting, or the collector itself restarting.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

import aiohttp

from collector.docker.logstream import LogStreamClient, LogsUnavailable
from collector.pipeline.entry import Entry, Origin, StreamPosition
from collector.pipeline.queue import ChunkQueue
from collector.sources.apistream import RESUME_WINDOW_NS, StreamDecoder, since_param
from collector.sources.emit import emit, joined
from collector.sources.source import SourceStats
from collector.transform.lines import LineProcessor
from collector.transform.multiline import Joiner
from collector.transform.routing import StreamLabeler

log = logging.getLogger(__name__)

_MIN_BACKOFF = 0.25
_READ_BYTES = 256 * 1024  # at most this much per read: what is already buffered comes at once


@dataclass(slots=True)
class StreamSettings:
    idle_timeout: float  # no byte for this long: the connection may be dead, reconnect
    drain_timeout: float  # after die: no progress (and not waiting for queue room) for this long ends it
    max_line_bytes: int
    max_backoff: float = 10.0


class _End(Enum):
    DONE = "done"  # the container stopped and its log was read to the end
    STOPPED = "stopped"  # the follow stream ended because the container stopped: one last read
    RECONNECT = "reconnect"  # the connection ended while the container runs (or Docker is unreachable)
    IDLE = "idle"
    STALLED = "stalled"  # draining without progress
    GONE = "gone"  # 404: the container was removed; 409: dead or being removed (never readable again)
    REFUSED = "refused"  # 501: the driver cannot be read back


IsRunning = Callable[[], Awaitable[bool | None]]  # None: Docker could not be asked


class StreamSource:
    kind = "stream"
    processor: LineProcessor | None = None  # per-line rules, set by the registry
    joiner: Joiner | None = None  # multiline joining, set by the registry through join_lines()
    labeler: StreamLabeler | None = None  # labels from fields and the cardinality guard, set by the registry

    def __init__(
        self,
        container_id: str,
        tty: bool,
        origin: Origin,
        queue: ChunkQueue,
        client: LogStreamClient,
        settings: StreamSettings,
        start: StreamPosition,
        stats: SourceStats,
        is_running: IsRunning,
        opened: aiohttp.ClientResponse | None = None,
    ) -> None:
        self.container_id = container_id
        # A response requested at the start event, before the inspect: a short-lived `--rm`
        # container can be removed before a request made after the inspect reaches dockerd.
        self._opened = opened
        self.tty = tty
        self.origin = origin
        self.stats = stats
        self.draining = False
        self.connected = False
        self.waiting_for_room = False  # blocked on a full queue: Docker holds what is not read yet
        # The last connection was cut (ended inside a frame, or by a connection error) rather than
        # ended by Docker: what came after our position is unread until a later read gets it.
        self._cut = False
        self.refused = ""  # set when Docker will not give these logs (e.g. 501)
        self._gone_status = 0  # 404 or 409: how Docker said the container is gone
        self._records = 0  # records Docker sent over every connection of this source
        self.queued_position = start
        self._queue = queue
        self._client = client
        self._settings = settings
        self._is_running = is_running
        self._wake = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------
    def drain(self) -> None:
        """The container died: the stream delivers what is left and ends by itself; wait for that."""
        self.draining = True
        self._wake.set()

    def resume(self) -> None:
        """Started again before the drain finished: keep following."""
        self.draining = False

    def close(self) -> None:
        """Release a response opened early whose reader never ran (run() closes the ones it uses)."""
        if self._opened is not None:
            self._opened.close()
            self._opened = None

    def unread_bytes(self) -> int | None:
        return None  # what Docker still holds is not known here

    def snapshot(self) -> dict[str, object]:
        return {"connected": self.connected, "since": since_param(self.queued_position), "reconnects": self.stats.reconnects}

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.close()

    async def _run(self) -> None:
        backoff = _MIN_BACKOFF
        follow = True
        while True:
            delivered_before = self.stats.lines
            end = await self._pass(follow)
            if end is _End.DONE:
                return
            if end is _End.STOPPED:
                # A follow stream can end a moment before Docker has stored the container's last
                # output (seen: a final line without newline); one plain read from our position
                # picks that up, and ends by itself.
                follow = False
                continue
            if end is _End.GONE:
                if not follow:
                    await self._gone_after_stop()
                    return
                if not self.draining or self.stats.lines == delivered_before:
                    # Removed before (or while) we read it: whatever it wrote after our position is gone.
                    if self._gone_status == 409:
                        self._lose("dead_or_removing", "docker refused the log stream of a container that is dead or "
                                   "being removed (409) before it was read to the end")
                    else:
                        self._lose("removed_before_read", "container removed before its log stream was read to the end")
                return
            if end is _End.REFUSED:
                return
            if end is _End.STALLED:
                self._lose("stalled_drain", "log stream made no progress while draining; closed",
                           drain_timeout_s=self._settings.drain_timeout)
                return
            self.stats.reconnects += 1
            if end is _End.IDLE:
                continue  # a quiet container: reconnect at once from where we are
            if self.stats.lines > delivered_before:
                backoff = _MIN_BACKOFF
            delay = backoff * (0.5 + random.random() / 2)
            backoff = min(backoff * 2, self._settings.max_backoff)
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()  # drain() cuts the wait short
            except TimeoutError:
                pass

    # -- one connection -------------------------------------------------------------------------
    async def _pass(self, follow: bool) -> _End:
        settings = self._settings
        decoder = StreamDecoder(self.tty, settings.max_line_bytes, resume_from=self.queued_position)
        if self.joiner is not None:
            decoder.starts = []  # where each entry starts, for the joiner
            self.joiner.discard()  # open entries begin after our position: this pass reads them again
        try:
            opened, self._opened = self._opened, None
            async with self._client.open(self.container_id, since_param(self.queued_position), follow, opened) as body:
                self.connected = True
                while True:
                    # Room first, then read: a stream held back by a full queue holds nothing read
                    # (Docker keeps what is not read yet).
                    self.waiting_for_room = True
                    try:
                        await self._queue.room(_READ_BYTES, self.container_id)
                    finally:
                        self.waiting_for_room = False
                    limit = settings.drain_timeout if self.draining else settings.idle_timeout
                    joining = self.joiner.time_left() if self.joiner is not None else None
                    try:
                        async with asyncio.timeout(limit if joining is None else min(limit, joining)):
                            data = await body.read(_READ_BYTES)
                    except TimeoutError:
                        if joining is not None and joining < limit:
                            await self._put([], 0, decoder)  # a joined entry's time is up
                            continue
                        return _End.STALLED if self.draining else _End.IDLE
                    if not data:
                        break
                    await self._put(decoder.feed(data), len(data), decoder)
                # The stream ended: the container stopped, or the connection was cut (then the
                # next pass continues from our position).
                self._cut = decoder.cut
                if not follow:
                    if self._cut:
                        return _End.RECONNECT  # the read-through was cut: read again from our position
                    await self._put(decoder.finish(), 0, decoder, final=True)
                    return _End.DONE
                if self.draining or await self._is_running() is False:
                    await self._put([], 0, decoder, final=True)  # joined entries end with the container's output
                    return _End.STOPPED
                return _End.RECONNECT
        except LogsUnavailable as err:
            if err.status in (404, 409):  # 409: "can not get logs from container which is dead or marked for removal"
                self._gone_status = err.status
                return _End.GONE
            if err.status == 501 or "does not support reading" in err.message:
                self.refused = err.message
                log.warning("docker cannot give this container's logs back; skipped",
                            extra={"container_id": self.container_id[:12], "error": err.message})
                return _End.REFUSED
            self.stats.last_error = str(err)
            log.warning("log stream refused; retrying", extra={"container_id": self.container_id[:12], "error": str(err)})
            return _End.RECONNECT
        except (aiohttp.ClientError, OSError) as err:
            self._cut = True
            self.stats.last_error = f"log stream: {err.__class__.__name__}: {err}"
            log.info("log stream interrupted; reconnecting", extra={"container_id": self.container_id[:12], "error": str(err)})
            return _End.RECONNECT
        finally:
            self.connected = False
            self._account(decoder)

    async def _gone_after_stop(self) -> None:
        """The follow stream ended and the container is gone before the last plain read (a `--rm`
        container). Docker ends a stopped container's stream once it sent everything, between two
        frames, however long after the removal that is (its reader holds the log open): that end
        loses nothing, and an empty one means the container wrote nothing. Only a stream that was
        cut (inside a frame, or by a connection error) left lines unread that nobody can read now.
        Blind spot: dockerd 20.10 also ends a stream orderly, short, when the container stops while
        it still sends the backlog the log held at the request; nothing in the stream tells, and
        that end may come before or after the removal (CI saw one before: 225 of 3,000 lines
        missing), so any orderly end of a container gone before the last read is counted."""
        if not self._cut:
            if self._records:
                # The blind spot above cannot be told from a complete stream: say so rather than
                # lose lines silently (an over-count at worst, under a reason of its own).
                self._lose("possibly_cut_at_removal", "the log stream ended orderly and Docker removed the container; "
                           "Docker may have ended it before sending everything, so lines after this point may be lost")
            elif not self.stats.losses["docker_error"]:
                # Nothing at all came before the container went: it wrote nothing, or (seen with
                # dockerd 20.10's local driver) Docker ended the stream without its lines.
                self._lose("ended_before_any_record", "the log stream of a removed container ended before any record: "
                           "what it wrote, if anything, is lost")
            return
        if self._records:
            self._lose("removed_while_reading", "log stream cut while the container was being removed; it is gone, "
                       "so lines after this point may be lost")
        else:
            self._lose("ended_before_any_record", "the log stream of a removed container was cut before any record: "
                       "what it wrote is lost")

    def _lose(self, reason: str, message: str, events: int = 1, **facts: object) -> None:
        """Count a loss by reason and log it with the container it hit."""
        self.stats.lose(reason, events)
        log.warning(message, extra={"container_id": self.container_id[:12], "loss": reason,
                                    "since": since_param(self.queued_position), **facts})

    def join_lines(self, joiner: Joiner) -> None:
        self.joiner = joiner

    async def _put(self, entries: list[Entry], nbytes: int, decoder: StreamDecoder, final: bool = False) -> None:
        if decoder.gap:
            decoder.gap = False
            self.stats.gaps += 1
            log.warning("docker no longer has the records after the saved position: some lines were lost",
                        extra={"container_id": self.container_id[:12], "since": since_param(self.queued_position)})
        self.stats.bytes += nbytes
        position = decoder.position
        lines = len(entries)
        entries, position = joined(self, entries, decoder.starts, position, final)
        self.stats.lines += lines
        if not entries and position == self.queued_position:
            return  # only part of a split line (or of a joined entry) so far
        emit(self, self._queue, entries, nbytes, position)  # after room() in _pass
        self.queued_position = position

    def _account(self, decoder: StreamDecoder) -> None:
        stats = decoder.stats
        self._records += stats.records
        if stats.docker_errors:
            # dockerd's reader failed (e.g. the log deleted under it): what it could not read is lost.
            self.stats.errors += stats.docker_errors
            self._lose("docker_error", "docker could not read this container's log; what it could not read is lost",
                       stats.docker_errors, count=stats.docker_errors, error=stats.last_docker_error)
        if stats.bad_records:
            self.stats.errors += stats.bad_records
            self.stats.last_error = stats.last_error
            log.warning("bad log stream records skipped", extra={
                "container_id": self.container_id[:12], "count": stats.bad_records, "error": stats.last_error})
        self.stats.truncated += stats.truncated_lines
        if stats.beyond_window:
            log.warning("log records stamped more than the resume window earlier than a record before them (a clock "
                        "step back?): a reconnect between the two would not get them again (dockerd's since hides them)",
                        extra={"container_id": self.container_id[:12], "count": stats.beyond_window,
                               "window_s": RESUME_WINDOW_NS // 1_000_000_000})
