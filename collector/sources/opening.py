"""Opening the source a route chose: a FileTailer on the json-file log, or a StreamSource on the
Docker API, each started where startpoint.py says; and what a start event opens before its inspect."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from collector.docker.containers import ContainerInfo, local_log_path
from collector.docker.logstream import LogStreamClient
from collector.pipeline.entry import FilePosition
from collector.pipeline.queue import ChunkQueue
from collector.sources.apistream import since_param
from collector.sources.files import FileTailer, InotifyHub, TailerSettings
from collector.sources.handles import HeldLog, OwnedFd
from collector.sources.jsonfile import JsonFileParser
from collector.sources.profiles import ContainerProfiles
from collector.sources.startpoint import StartPoints
from collector.sources.stream import StreamSettings, StreamSource
from collector.sources.tracked import Tracked

IsRunning = Callable[[str], Awaitable[bool | None]]


@dataclasses.dataclass(slots=True)
class OpeningSettings:
    containers_dir: str
    tailer: TailerSettings
    stream: StreamSettings
    own_id: str | None


class SourceOpener:
    def __init__(self, settings: OpeningSettings, *, files_usable: bool, hub: InotifyHub, streams: LogStreamClient,
                 queue_for: Callable[[str], ChunkQueue], start_points: StartPoints, profiles: ContainerProfiles,
                 is_running: IsRunning) -> None:
        self._settings = settings
        self._files_usable = files_usable
        self._hub = hub
        self._streams = streams
        self._queue_for = queue_for
        self._start_points = start_points
        self._profiles = profiles
        self._is_running = is_running

    def preopen(self, info: ContainerInfo) -> OwnedFd | None:
        """Hold a starting container's json-file log before the inspect round-trip."""
        if not self._files_usable or info.id == self._settings.own_id:
            return None
        try:
            return OwnedFd.open(local_log_path(self._settings.containers_dir, info))
        except OSError:
            return None  # another driver, or gone already, or not readable: routing decides

    def request_early_stream(self, tracked: Tracked, held: HeldLog, inspected: bool) -> None:
        if inspected or held.has_file or tracked.info.id == self._settings.own_id:
            return
        # No json-file log: most likely another driver. Ask for the stream now, beside the inspect:
        # a short-lived `--rm` container may be removed before a request sent after the inspect
        # reaches dockerd (an open stream still reads it to the end).
        held.request_stream(self._streams.connect(tracked.info.id, since_param(self._start_points.stream_start(tracked))))

    def file_source(self, tracked: Tracked, held: HeldLog | None) -> FileTailer:
        info = tracked.info
        position, first_meeting = self._start_points.of(tracked)
        file_position = position if isinstance(position, FilePosition) else None
        tailer = FileTailer(
            local_log_path(self._settings.containers_dir, info),
            self._profiles.origin(tracked),
            self._queue_for(tracked.profile.tenant if tracked.profile else ""),
            self._hub,
            self._settings.tailer,
            JsonFileParser(self._profiles.max_line_bytes(tracked)),
            file_position,
            tracked.stats,
            held.take_file() if held is not None else None,  # the tailer owns it from its constructor on
            # Begin at the oldest rotated file still there; a first meeting's start_at moves on from it.
            from_oldest=True,
        )
        if first_meeting:
            try:
                self._start_points.seek_first_meeting(tailer, info)
            except BaseException:
                tailer.close()
                raise
        return tailer

    def stream_source(self, tracked: Tracked, held: HeldLog | None) -> StreamSource:
        info = tracked.info
        container_id = info.id
        return StreamSource(
            container_id, info.tty, self._profiles.origin(tracked),
            self._queue_for(tracked.profile.tenant if tracked.profile else ""), self._streams,
            dataclasses.replace(self._settings.stream, max_line_bytes=self._profiles.max_line_bytes(tracked)),
            self._start_points.stream_start(tracked), tracked.stats, lambda: self._is_running(container_id),
            held.take_response() if held is not None else None,  # taken last: the source owns it from here on
        )
