"""What a container is read with: its profile (labels, tenant, settings) made by the Profiler
from its name, image and labels, the origin its chunks carry, and the processors its source runs."""

from __future__ import annotations

import logging

from collector.docker.containers import ContainerInfo
from collector.pipeline.entry import Origin
from collector.sources.lifecycle import Phase
from collector.sources.source import Source
from collector.sources.tracked import Tracked
from collector.transform.labeling import Profile, Profiler

log = logging.getLogger(__name__)


class ContainerProfiles:
    def __init__(self, profiler: Profiler, max_line_bytes: int) -> None:
        self._profiler = profiler
        self._max_line_bytes = max_line_bytes  # unless a container's profile sets its own
        self.host = ""
        self.labels_trimmed = 0  # labels cut or dropped to stay within Loki's limits

    def make(self, info: ContainerInfo, report: bool = True) -> Profile:
        profile = self._profiler.profile(info, self.host)
        if not report:
            return profile
        where = {"container_id": info.id[:12], "container_name": info.name}
        if profile.trimmed:
            self.labels_trimmed += len(profile.trimmed)
            log.warning("labels trimmed to Loki's limits", extra={**where, "trimmed": profile.trimmed})
        if profile.problems:
            log.warning("collector.* labels ignored", extra={**where, "problems": profile.problems})
        return profile

    def relabel(self, tracked: Tracked) -> None:
        """After a rename: the labels of the chunks read from now on (an exclusion waits for the next start)."""
        container_id, new_name = tracked.info.id, tracked.info.name
        if tracked.profile is None or tracked.profile.excluded_by:
            return
        profile = self.make(tracked.info)
        if profile.excluded_by:
            log.warning("renamed container now matches an exclusion; it applies from its next start",
                        extra={"container_id": container_id[:12], "container_name": new_name, "rule": profile.excluded_by})
            return
        tracked.profile = profile
        if tracked.source is not None:
            tracked.source.origin = self.origin(tracked)  # from the next chunk on: at a line boundary

    def origin(self, tracked: Tracked) -> Origin:
        info, profile = tracked.info, tracked.profile or self.make(tracked.info)
        return Origin(container_id=info.id, labels=dict(profile.labels),
                      metadata={"container_id": info.id, "image": info.image, **profile.metadata}, tenant=profile.tenant)

    def max_line_bytes(self, tracked: Tracked) -> int:
        profile = tracked.profile
        return profile.max_line_bytes if profile and profile.max_line_bytes else self._max_line_bytes

    def exclusion_lifted(self, tracked: Tracked) -> bool:
        """Skipped by a name rule, and renamed since to a name no rule excludes: read it again."""
        if tracked.phase is not Phase.SKIPPED or tracked.profile is None or not tracked.profile.excluded_by:
            return False
        return not self.make(tracked.info, report=False).excluded_by

    def fit(self, tracked: Tracked, source: Source) -> None:
        """Give a new source the container's line processor, stream labeler and line joiner."""
        problems: list[str] = []
        source.processor = self._profiler.processor(tracked.info, problems)
        source.labeler = self._profiler.labeler(tracked.info, tracked.profile.tenant if tracked.profile else "")
        joiner = self._profiler.joiner(tracked.info, self.max_line_bytes(tracked), problems)
        if joiner is not None:
            source.join_lines(joiner)
        if problems:
            self._profiler.processing_stats.problems += len(problems)
            log.warning("collector.* labels ignored", extra={"container_id": tracked.info.id[:12],
                                                              "container_name": tracked.info.name, "problems": problems})
