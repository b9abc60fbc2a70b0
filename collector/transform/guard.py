"""A cardinality guard: at most `max_streams` label sets active per tenant for this collector.

A label set is active while it had a line within `window`. When a new one would pass the limit,
its foldable labels (values that can grow without bound: mapped Docker labels, labels from line
fields, a compose one-off container's name) become `_other`, so Loki sees one more stream at most
per distinct set of the other labels instead of refusing streams. Loki's own limit is per tenant
across every host: size this one as its share (docs/configuration.md, "Cardinality guard")."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

OTHER = "_other"
log = logging.getLogger(__name__)

LabelKey = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class StreamGuard:
    max_streams: int
    window: float
    clock: Callable[[], float] = time.monotonic
    folded: int = 0  # label sets folded (for /metrics)
    _active: dict[str, dict[LabelKey, float]] = field(default_factory=dict)

    def admit(self, tenant: str, labels: dict[str, str], foldable: frozenset[str]) -> dict[str, str]:
        """The labels to send: these, or these with the foldable ones folded to `_other`."""
        if self.max_streams <= 0:
            return labels
        now = self.clock()
        active = self._active.setdefault(tenant, {})
        key = tuple(sorted(labels.items()))
        if key in active:
            active[key] = now
            return labels
        folded = {name: OTHER if name in foldable else value for name, value in labels.items()}
        folded_key = tuple(sorted(folded.items()))
        # Room for a new label set, keeping one for where the overflow goes: never more than the limit.
        room = self.max_streams - (0 if folded_key in active or folded_key == key else 1)
        if len(active) >= room:
            self._expire(active, now)
        if len(active) < room or folded_key == key:
            active[key] = now  # within the limit, or nothing to fold: Loki's limit decides
            return labels
        active[folded_key] = now
        self.folded += 1
        if self.folded == 1 or self.folded % 1000 == 0:
            log.warning("too many active streams: foldable label values become _other",
                        extra={"tenant": tenant or "(default)", "max_active_streams": self.max_streams, "folded": self.folded,
                               "labels": sorted(name for name in labels if name in foldable)})
        return folded

    def active(self, tenant: str) -> int:
        return len(self._active.get(tenant, ()))

    def size(self) -> int:
        """Label sets remembered over every tenant (those seen within `window`, or up to the limit)."""
        return sum(len(active) for active in self._active.values())

    def _expire(self, active: dict[LabelKey, float], now: float) -> None:
        for key in [key for key, seen in active.items() if now - seen > self.window]:
            del active[key]
