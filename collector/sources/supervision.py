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

from enum import Enum

from collector.pipeline.queue import QueueClosed

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
