"""What the registry does when something fails for one container: the fault stays with it.

Erlang/OTP's one_for_one, in asyncio. Everything done for one container (its inspect, routing,
opening its log, its start point, the fallback, and its source while it runs) is one unit: an
unexpected exception there is logged once with its traceback, counted by stage and exception
type, and the container alone is set up again after a growing pause; after `MAX_ATTEMPTS` faults
in a row it is read through the API stream instead, and if that fails too it is marked failed
until its next start. No such fault ends the registry's task group.

Only the collector's own machinery ends the process: `MACHINERY_ERRORS` raised for one container
(the queue closed under it, memory exhausted) pass through, as do failures of the tasks that are
not per container at all (sink, positions writer, inotify hub), which the app's task group holds.
"""

from __future__ import annotations

import logging
from collections import Counter
from enum import Enum

from collector.pipeline.queue import QueueClosed
from collector.sources.lifecycle import Phase
from collector.sources.tracked import Tracked

log = logging.getLogger(__name__)

RETRY_BACKOFF = 0.5  # seconds before the second attempt; doubles with each fault in a row
MAX_ATTEMPTS = 4  # faults in a row before the container is read another way
MACHINERY_ERRORS: tuple[type[BaseException], ...] = (QueueClosed, MemoryError)


class Verdict(Enum):
    RETRY = "retry"  # set the container up again after backoff()
    FALL_BACK = "fall_back"  # read it through the API stream from now on
    FAIL = "fail"  # it can be read no way we know: failed until its next start


def verdict(faults: int, fell_back: bool) -> Verdict:
    """After the `faults`-th fault in a row; `fell_back`: the stream is what is failing now."""
    if faults < MAX_ATTEMPTS:
        return Verdict.RETRY
    return Verdict.FAIL if fell_back else Verdict.FALL_BACK


def backoff(faults: int) -> float:
    return RETRY_BACKOFF * 2 ** max(0, faults - 1)


def fault_reason(stage: str, err: BaseException) -> str:
    """The metric's reason: where it failed and how (a bounded set: stages x exception types)."""
    return f"{stage}:{type(err).__name__}"


def record(tracked: Tracked, stage: str, err: Exception, faults: Counter[str]) -> None:
    """Count a fault on the registry's `faults` (by stage and type) and on the container."""
    faults[fault_reason(stage, err)] += 1
    tracked.stats.errors += 1
    tracked.stats.last_error = f"{type(err).__name__}: {err}"


def where(tracked: Tracked, stage: str) -> dict[str, object]:
    return {"container_id": tracked.info.id[:12], "container_name": tracked.info.name, "stage": stage,
            "faults_in_a_row": tracked.faults}


def log_fault(tracked: Tracked, stage: str, err: Exception) -> None:
    """The traceback once, at the first fault in a row; afterwards a line each."""
    if tracked.faults == 1:
        log.error(f"container {'source' if stage == 'source' else 'setup'} failed; trying again", exc_info=err,
                  extra=where(tracked, stage))
    else:
        log.warning("container failed again", extra={**where(tracked, stage), "error": tracked.stats.last_error})


def event_failed(tracked: Tracked, err: Exception, faults: Counter[str], busy: bool) -> None:
    """An event's handling failed for this container: unless a task of it is under way (`busy`),
    it waits for its next start."""
    record(tracked, "event", err, faults)
    log.error("container event failed", exc_info=err, extra={"container_id": tracked.info.id[:12]})
    if not busy:
        tracked.phase = Phase.FAILED
        tracked.reason = f"failed: {tracked.stats.last_error}"


def give_up(tracked: Tracked, stage: str) -> None:
    """It can be read no way we know: failed until its next start."""
    tracked.phase = Phase.FAILED
    tracked.reason = f"failed: {tracked.stats.last_error}"
    log.error("container cannot be read; its next start tries again",
              extra={**where(tracked, stage), "error": tracked.stats.last_error})
