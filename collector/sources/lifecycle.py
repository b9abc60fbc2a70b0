"""What an event does to a container's source: the lifecycle as one table, apart from the I/O.

Phases of a container as the registry holds it, and the events that move it:

    NEW --start--> RESOLVING --(routed)--> READING --die--> DRAINING --(source ends)--> STOPPED
                                              ^                |  start (a restart: same id, same log)
                                              +----resume------+
    destroy: a live source drains and is forgotten when it ends; anything else is forgotten now.
"""

from __future__ import annotations

from enum import Enum


class Phase(Enum):
    NEW = "new"
    RESOLVING = "resolving"  # start seen; the inspect that decides how to read it is under way
    READING = "reading"  # a source follows the running container
    DRAINING = "draining"  # died or destroyed: the source delivers what is left, then ends
    STOPPED = "stopped"  # no source: the container is stopped and read to its end
    SKIPPED = "skipped"  # not read: `reason` says why
    FAILED = "failed"  # can be read neither from its file nor through the API


class Event(Enum):
    START = "start"
    CATCH_UP = "catch_up"  # found stopped with unread log (at startup or after a reconnect)
    DIE = "die"
    DESTROY = "destroy"


class Action(Enum):
    NOTHING = "nothing"
    RESOLVE = "resolve"  # open/inspect/route and start a source
    RESUME = "resume"  # the draining source keeps reading: a restart appends to the same log
    DRAIN = "drain"  # deliver what is left, then end
    FORGET = "forget"  # drop the container now


def next_step(phase: Phase, event: Event, source_alive: bool, exclusion_lifted: bool = False) -> Action:
    """`exclusion_lifted`: a container skipped by a name rule was renamed to a name no rule excludes."""
    if event is Event.START:
        if phase in (Phase.NEW, Phase.STOPPED, Phase.FAILED):
            return Action.RESOLVE
        if phase is Phase.SKIPPED and exclusion_lifted:
            return Action.RESOLVE
        if phase is Phase.DRAINING and source_alive:
            return Action.RESUME
        # RESOLVING or READING: a repeat; DRAINING whose source is ending: it is routed again when
        # it has ended (the container runs); SKIPPED: a restart does not change its driver (a rename
        # can lift a name rule, though).
        return Action.NOTHING
    if event is Event.CATCH_UP:
        return Action.RESOLVE if phase is Phase.NEW else Action.NOTHING
    if event is Event.DIE:
        return Action.DRAIN if phase is Phase.READING and source_alive else Action.NOTHING
    # DESTROY
    if source_alive:
        return Action.DRAIN
    if phase is Phase.RESOLVING:
        return Action.NOTHING  # the resolve task reads what it holds open, then forgets it
    return Action.FORGET


def phase_after(action: Action) -> Phase:
    """The phase a container is in once `action` is taken (RESOLVE, RESUME or DRAIN)."""
    return {Action.RESOLVE: Phase.RESOLVING, Action.RESUME: Phase.READING, Action.DRAIN: Phase.DRAINING}[action]


def phase_when_launched(running: bool) -> Phase:
    """A new source follows a running container; a stopped one's is read to its end, then closed."""
    return Phase.READING if running else Phase.DRAINING


class Ending(Enum):
    """What follows the end of a container's source (the registry still holds the container)."""
    FAULT = "fault"  # it failed: supervision.py says whether to retry, fall back or fail
    UNREADABLE = "unreadable"  # its file could not be opened and the API refused too: FAILED
    REFUSED = "refused"  # the API will not stream its log: SKIPPED
    FORGET = "forget"  # destroyed: drop it now
    ROUTE_AGAIN = "route_again"  # started again while its source was finishing: continue where it stopped
    STOP = "stop"  # read to its end: STOPPED


def after_source(*, failed: bool, destroyed: bool, refused: bool, had_reason: bool, running: bool) -> Ending:
    """`had_reason`: it was read through the stream for a reason (its file could not be opened)."""
    if failed and not destroyed:
        return Ending.FAULT
    if refused:
        return Ending.UNREADABLE if had_reason else Ending.REFUSED
    if destroyed:
        return Ending.FORGET
    return Ending.ROUTE_AGAIN if running else Ending.STOP
