"""The public entry point of the sources: one source per container, driven through one lifecycle;
the registry owns every source task and answers what /status and /metrics read.

Events never wait for each other: a start opens the json-file log at once (a `--rm` container's
file is unlinked ~0.3 s later), and the inspect that decides how to read it runs in a task of its
own (boundary.py). What an event does to a container is lifecycle.py's; which way it is read,
routing.py's; where its source starts, startpoint.py's; what follows a fault, supervision.py's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from collector.docker.containers import ContainerInfo, local_log_path
from collector.docker.logstream import LogStreamClient
from collector.pipeline.queue import ChunkQueue
from collector.positions import PositionStore
from collector.sources import lifecycle, rollup, supervision
from collector.sources.boundary import ContainerTasks, Inspect
from collector.sources.files import InotifyHub, TailerSettings
from collector.sources.handles import HeldLog
from collector.sources.lifecycle import Action, Ending, Event, Phase, next_step
from collector.sources.opening import IsRunning, OpeningSettings, SourceOpener
from collector.sources.profiles import ContainerProfiles
from collector.sources.routing import fallback_reason, files_usable, is_fallback, not_read_reason, stream_reason
from collector.sources.source import Source, SourceStats
from collector.sources.startpoint import StartPoints
from collector.sources.stream import StreamSettings
from collector.sources.tracked import Tracked
from collector.startup_report import report_routes
from collector.transform.labeling import Profiler
from collector.transform.lines import ProcessingStats

log = logging.getLogger(__name__)



@dataclass(slots=True)
class RegistrySettings:
    containers_dir: str
    tailer: TailerSettings
    stream: StreamSettings
    max_line_bytes: int
    own_id: str | None
    start_at: float | None  # first meeting: None = all, 0 = end, else a window in seconds
    mode: str = "auto"  # auto: json-file from files, the rest from the API; stream: all from the API


class SourceRegistry:
    def __init__(
        self,
        *,
        queue: ChunkQueue,
        queue_for: Callable[[str], ChunkQueue] | None = None,
        hub: InotifyHub,
        streams: LogStreamClient,
        positions: PositionStore,
        settings: RegistrySettings,
        inspect: Inspect,
        is_running: IsRunning,
        profiler: Profiler,
    ) -> None:
        self._profiler = profiler
        self._queue_for = queue_for or (lambda tenant: queue)  # each tenant's lane (sinks/lanes.py)
        self._positions = positions
        self._settings = settings
        self.containers: dict[str, Tracked] = {}
        self.skipped = Counter[str]()
        self.fallbacks = Counter[str]()
        self.lost_bytes = Counter[str]()
        self.faults = Counter[str]()  # unexpected per-container failures, by stage:exception
        self.retired = SourceStats()  # counters of removed containers, so totals never go back
        self.first_reconcile_done = False
        self.files_usable, self.files_problem = files_usable(settings.containers_dir, settings.mode)
        self._start_points = StartPoints(positions, containers_dir=settings.containers_dir, own_id=settings.own_id,
                                         start_at=settings.start_at, files_usable=self.files_usable)
        self._profiles = ContainerProfiles(profiler, settings.max_line_bytes)
        self._opener = SourceOpener(
            OpeningSettings(settings.containers_dir, settings.tailer, settings.stream, settings.own_id),
            files_usable=self.files_usable, hub=hub, streams=streams, queue_for=self._queue_for,
            start_points=self._start_points, profiles=self._profiles, is_running=is_running)
        self._tasks = ContainerTasks(self, inspect, self._opener, self._start_points)
        self._group: asyncio.TaskGroup | None = None
        self._startup_report: asyncio.Task[None] | None = None
        self.running = asyncio.Event()  # set once sources can be started
        self._stopping = asyncio.Event()

    # -- ownership ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Hold the task group that owns every source and inspect task until stop()."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self.running.set()
            await self._stopping.wait()
            # Cancel every source, the draining ones too: they may wait on a full queue, which is
            # only closed (and drained by the sink) after this group has ended.
            for task in [*self._tasks.resolving.values(), *([self._startup_report] if self._startup_report else [])]:
                task.cancel()
            for tracked in self.containers.values():
                if tracked.task is not None and not tracked.task.done():
                    self.lost_bytes["shutdown_after_destroy"] += rollup.count_abandoned(tracked)
                    tracked.task.cancel()
        self._group = None

    def stop(self) -> None:
        self._stopping.set()

    # -- events (never await: the next event must be handled at once) --------------------------
    def set_host(self, name: str) -> None:
        self._profiles.host = name

    def started(self, event_info: ContainerInfo, inspected: bool = False) -> None:
        """A start event. json-file logs are opened now; the inspect that routes it runs apart."""
        tracked = self.containers.get(event_info.id)
        if tracked is None:
            tracked = self.containers[event_info.id] = Tracked(event_info, Phase.NEW)
        tracked.info.running = True
        self._apply(tracked, Event.START, event_info, inspected)

    def died(self, container_id: str) -> None:
        tracked = self.containers.get(container_id)
        if tracked is not None:
            tracked.info.running = False
            self._apply(tracked, Event.DIE)

    def destroyed(self, container_id: str) -> None:
        """Forget the container; a source still reading finishes in its own task first."""
        self._positions.forget(container_id)
        self._start_points.read_upto.pop(container_id, None)
        tracked = self.containers.get(container_id)
        if tracked is not None:
            tracked.info.running = False
            tracked.destroyed = True
            self._apply(tracked, Event.DESTROY)

    def renamed(self, container_id: str, new_name: str) -> None:
        tracked = self.containers.get(container_id)
        if tracked is None or not new_name:
            return
        tracked.info.name = new_name
        try:
            self._profiles.relabel(tracked)
        except supervision.MACHINERY_ERRORS:
            raise
        except Exception as err:  # noqa: BLE001 - one container's fault stays with it
            self._event_fault(tracked, err)

    def reconcile(self, present: list[ContainerInfo]) -> None:
        """After (re)connecting, and periodically: apply what changed while we were not told."""
        present_ids = {info.id for info in present}
        at_startup = not self.first_reconcile_done
        for container_id in [cid for cid, t in self.containers.items() if cid not in present_ids and not t.destroyed]:
            self.destroyed(container_id)
        self._positions.retain(present_ids)
        for info in present:
            try:
                self._reconcile_one(info, at_startup)
            except supervision.MACHINERY_ERRORS:
                raise
            except Exception as err:  # noqa: BLE001 - one container's fault stays with it
                tracked = self.containers.get(info.id)
                if tracked is not None:
                    self._event_fault(tracked, err)
                else:
                    log.error("container could not be tracked", exc_info=err, extra={"container_id": info.id[:12]})
        self.first_reconcile_done = True
        if at_startup:
            self._report_routes()

    def _reconcile_one(self, info: ContainerInfo, at_startup: bool) -> None:
        tracked = self.containers.get(info.id)
        if tracked is None:
            tracked = self.containers[info.id] = Tracked(info, Phase.NEW, found_at_startup=at_startup)
            if info.running:
                self.started(info, inspected=True)
            elif self._start_points.may_have_unread(info):
                self._apply(tracked, Event.CATCH_UP, info, inspected=True)
            else:
                tracked.phase = Phase.STOPPED
            return
        if info.name and info.name != tracked.info.name:
            self.renamed(info.id, info.name)
        if info.running and not tracked.info.running:
            self.started(info, inspected=True)
        elif not info.running and tracked.info.running and tracked.phase is not Phase.RESOLVING:
            self.died(info.id)

    def _report_routes(self) -> None:
        """Log the containers found at startup and how each is read, once their routes are known."""
        assert self._group is not None, "registry is not running"
        report = report_routes(list(self._tasks.resolving.values()), self._startup_routes)
        self._startup_report = self._group.create_task(report, name="startup-report")

    def _startup_routes(self) -> list[tuple[str, str, str]]:
        return [(t.info.name or t.info.id[:12], t.mode, t.mode_reason) for t in self.containers.values() if t.found_at_startup]

    # -- the lifecycle -------------------------------------------------------------------------
    def _apply(self, tracked: Tracked, event: Event, info: ContainerInfo | None = None, inspected: bool = False) -> None:
        try:
            self._step(tracked, event, info, inspected)
        except supervision.MACHINERY_ERRORS:
            raise
        except Exception as err:  # noqa: BLE001 - one container's fault stays with it
            self._event_fault(tracked, err)

    def _step(self, tracked: Tracked, event: Event, info: ContainerInfo | None, inspected: bool) -> None:
        action = next_step(tracked.phase, event, source_alive=tracked.task is not None and not tracked.task.done(),
                           exclusion_lifted=event is Event.START and self._profiles.exclusion_lifted(tracked))
        if action is Action.RESOLVE:
            tracked.phase = lifecycle.phase_after(action)
            self._resolve(tracked, info or tracked.info, catch_up=event is Event.CATCH_UP, inspected=inspected)
        elif action in (Action.RESUME, Action.DRAIN):
            assert tracked.source is not None
            tracked.source.resume() if action is Action.RESUME else tracked.source.drain()
            tracked.phase = lifecycle.phase_after(action)
        elif action is Action.FORGET:
            self.remove(tracked)
        # Action.NOTHING: a repeat (re-list, replayed event) or a container not read

    def _resolve(self, tracked: Tracked, event_info: ContainerInfo, catch_up: bool, inspected: bool) -> None:
        """Open a json-file log now, inspect in a task (unless `event_info` came from one), then route."""
        tracked.faults, tracked.fell_back = 0, False  # a new start: every way is worth trying again
        known = tracked.info if tracked.info.log_path else event_info
        if self._excluded(tracked, known, report=False):  # routing makes it again, from the inspect
            return  # costs nothing: no file opened, no stream, no task
        assert self._group is not None, "registry is not running"
        self._tasks.spawn_setup(self._group, tracked, event_info, HeldLog(None if catch_up else self._opener.preopen(known)), inspected)

    def set_up_again(self, tracked: Tracked) -> None:
        """After a fault: inspect it afresh and open its log by path (after the backoff)."""
        assert self._group is not None, "registry is not running"
        self._tasks.spawn_setup(self._group, tracked, tracked.info, HeldLog(), inspected=True)

    def holds(self, tracked: Tracked) -> bool:
        return self.containers.get(tracked.info.id) is tracked and not self._stopping.is_set()

    def route(self, tracked: Tracked, held: HeldLog | None, forced: str = "") -> None:
        """Pick the container's source (file, stream fallback, stream) and start it. The source
        takes from `held` what it reads; the rest stays with `held`'s owner, who closes it.
        `forced`: read it through the stream, for this reason."""
        info = tracked.info
        if skip := not_read_reason(info.id, info.log_driver, self._settings.own_id):
            return self._skip(tracked, skip)
        if self._excluded(tracked, info):
            return None
        assert tracked.profile is not None
        reason = stream_reason(info.log_driver, tracked.profile.mode, self.files_usable, self._settings.mode, forced)
        source: Source | None = None
        if reason is None:
            try:
                source = self._opener.file_source(tracked, held)
            except OSError as err:
                reason = fallback_reason(err)
                log.warning("container log file cannot be read; reading it through the Docker API instead",
                            extra={"container_id": info.id[:12], "container_name": info.name,
                                   "path": local_log_path(self._settings.containers_dir, info), "reason": reason,
                                   "error": err.strerror or str(err)})
        if source is None:
            if reason and is_fallback(reason):
                self.fallbacks[reason] += 1
            source = self._opener.stream_source(tracked, held)
        tracked.reason = reason or ""
        try:
            self._launch(tracked, source)
        except BaseException:
            source.close()  # it never ran: nobody else will close what it holds
            tracked.source = None
            raise

    def _launch(self, tracked: Tracked, source: Source) -> None:
        assert self._group is not None
        self._profiles.fit(tracked, source)
        tracked.source = source
        tracked.read_as = source.kind
        self._positions.ensure(tracked.info.id, source.queued_position)
        tracked.phase = lifecycle.phase_when_launched(tracked.info.running)
        if tracked.phase is Phase.DRAINING:
            source.drain()
        tracked.task = self._tasks.start_source(self._group, tracked, source)

    def source_ended(self, tracked: Tracked, source: Source, failure: Exception | None, progressed: bool) -> None:
        if self.containers.get(tracked.info.id) is not tracked or self._stopping.is_set():
            return
        tracked.source, tracked.task = None, None
        refused = getattr(source, "refused", "")
        ending = lifecycle.after_source(failed=failure is not None, destroyed=tracked.destroyed, refused=bool(refused),
                              had_reason=bool(tracked.reason), running=tracked.info.running)
        if failure is None:
            tracked.faults = 0
        elif progressed:
            tracked.faults = 0  # it read for a while: not the same fault over and over
        if ending is Ending.FAULT:
            assert failure is not None
            if self.after_fault(tracked, "source", failure):
                self.set_up_again(tracked)
        elif ending is Ending.UNREADABLE:
            tracked.phase = Phase.FAILED
            tracked.reason = f"{tracked.reason}; the API refused too: {refused}"
            log.error("container can be read neither from its file nor through the API",
                      extra={"container_id": tracked.info.id[:12], "reason": tracked.reason})
        elif ending is Ending.REFUSED:
            self._skip(tracked, "logs_not_readable", detail=refused)
        elif ending is Ending.FORGET:
            self.remove(tracked)
        elif ending is Ending.ROUTE_AGAIN:
            tracked.phase = Phase.RESOLVING
            self.route(tracked, None)
        else:
            tracked.phase = Phase.STOPPED

    # -- faults (supervision.py says what follows one) --------------------------------------------
    def after_fault(self, tracked: Tracked, stage: str, err: Exception) -> bool:
        """Count and log an unexpected failure of one container's setup or source; True: set it up
        again after the backoff (its phase is RESOLVING meanwhile). Otherwise it was read another
        way, failed for good (until its next start), or is gone."""
        tracked.faults += 1
        supervision.record(tracked, stage, err, self.faults)
        supervision.log_fault(tracked, stage, err)
        if tracked.destroyed or not self.holds(tracked):
            return False
        decided = supervision.verdict(tracked.faults, tracked.fell_back)
        if decided is supervision.Verdict.RETRY:
            tracked.phase = Phase.RESOLVING
            return True
        if decided is supervision.Verdict.FALL_BACK:
            tracked.fell_back, tracked.faults = True, 0
            try:
                self.route(tracked, None, forced="setup_failed" if stage != "source" else "source_failed")
                log.warning("container keeps failing; reading it through the Docker API instead",
                            extra=supervision.where(tracked, stage))
                return False
            except supervision.MACHINERY_ERRORS:
                raise
            except Exception as fallback_err:  # noqa: BLE001 - the stream cannot be set up either
                supervision.record(tracked, "fallback", fallback_err, self.faults)
        supervision.give_up(tracked, stage)
        return False

    def _event_fault(self, tracked: Tracked, err: Exception) -> None:
        busy = tracked.task is not None or tracked.info.id in self._tasks.resolving
        supervision.event_failed(tracked, err, self.faults, busy)

    def remove(self, tracked: Tracked) -> None:
        if self.containers.get(tracked.info.id) is tracked:
            del self.containers[tracked.info.id]
            rollup.add_stats(self.retired, tracked.stats)

    # -- not read ------------------------------------------------------------------------------
    def _skip(self, tracked: Tracked, reason: str, detail: str = "", shown: str = "") -> None:
        """Not read: counted by `reason`; `shown` (default: the reason) is what /status says."""
        shown = shown or reason
        if tracked.phase is not Phase.SKIPPED or tracked.reason != shown:
            self.skipped[reason] += 1
            log.info("container skipped", extra={"container_id": tracked.info.id[:12], "container_name": tracked.info.name,
                                                 "reason": shown, **({"detail": detail} if detail else {})})
        tracked.phase = Phase.SKIPPED
        tracked.reason = shown

    def _excluded(self, tracked: Tracked, info: ContainerInfo, report: bool = True) -> bool:
        """Make the container's profile from what is known of it; skip it when a rule excludes it.
        `report`: count and log what its labels lost (once per start: the profile it is read with)."""
        tracked.profile = self._profiles.make(info, report)
        if tracked.profile.excluded_by:
            self._skip(tracked, tracked.profile.skip_reason, shown=f"excluded by {tracked.profile.excluded_by}")
            return True
        return False

    # -- what /status and /metrics read -----------------------------------------------------------
    @property
    def host(self) -> str:
        return self._profiles.host

    @property
    def labels_trimmed(self) -> int:
        return self._profiles.labels_trimmed

    @property
    def processing(self) -> ProcessingStats:
        return self._profiler.processing_stats

    @property
    def streams_folded(self) -> int:
        return self._profiler.guard.folded

    def totals(self) -> SourceStats:
        return rollup.totals(self.retired, self.containers.values())

    def unreadable(self) -> list[str]:
        """Containers that can be read neither from their file nor through the API."""
        return rollup.unreadable(self.containers.values())
