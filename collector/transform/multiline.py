"""Multiline joining per (container, stream): lines that continue an entry (a stack trace's frames,
a traceback's body) are joined to it with "\\n".

Each entry arrives with the position where its first raw record starts. While a joined entry is
still open its start is held: the source's position never moves past it, so a restart (or a
stream reconnect) reads the whole entry again rather than half of it. A joined entry keeps its
first line's timestamp and is emitted when the next first line comes, after `timeout` without a
continuation, when the container's log ends, or when it reaches `max_bytes`."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collector.pipeline.entry import Entry
from collector.transform.saferegex import Matcher

# Continuation lines of the presets (anything else starts an entry).
PRESETS = {
    # Java/JVM: the exception line after the logged message ("java.lang.X: boom"), "\tat x.y(Z.java:1)",
    # "Caused by: ...", "\t... 12 more", "Suppressed: ...", indented lines.
    "java": re.compile(r"^(\s|Caused by:|Suppressed:|\.\.\. \d+ (more|common frames omitted)|"
                       r"[\w.$]+(Exception|Error|Throwable)(: |$))"),
    # Python: the traceback (after the logged message), its indented frames, chained-exception
    # separators, blank lines between them, and the closing "SomeError: message" line.
    "python": re.compile(r"^(\s|$|Traceback \(most recent call last\):|During handling of the above exception|"
                         r"The above exception was the direct cause|[\w.]+(Error|Exception|Exit|Interrupt|Warning)(: |$))"),
    # Go panics: "panic: ..." then "goroutine 1 [running]:", "main.f(...)", "\t/path.go:12 +0x1d", "exit status 2".
    "go": re.compile(r"^(\s|$|goroutine \d+ \[|[\w.*/()\[\]-]+\(.*\)$|created by |exit status \d+|\[signal )"),
}


def continuation_matcher(spec: str, compile: Callable[[str], Matcher] = re.compile) -> Callable[[str], Any]:
    """A preset name, or a first-line regular expression (lines that do not match it continue),
    compiled by `compile` (RE2 for a container's own label)."""
    preset = PRESETS.get(spec)
    if preset is not None:
        return preset.match
    first_line = compile(spec)
    return lambda line: first_line.search(line) is None


@dataclass(slots=True)
class _Open:
    ts_ns: int
    parts: list[str]
    size: int
    start: Any  # the source's position before the entry's first record
    opened_at: float
    metadata: dict[str, str] | None = None


@dataclass(slots=True)
class Joiner:
    continues: Callable[[str], Any]
    max_bytes: int
    timeout: float = 1.0
    clock: Callable[[], float] = time.monotonic
    joined_lines: int = 0  # raw lines folded into a previous entry (for /metrics)
    _open: dict[str, _Open] = field(default_factory=dict)

    def add(self, entries: list[Entry], starts: list[Any]) -> list[Entry]:
        """Entries that are complete now; open ones stay (see `held`)."""
        out: list[Entry] = []
        now = self.clock()
        for entry, start in zip(entries, starts, strict=True):
            line, stream = entry[1], entry[2]
            current = self._open.get(stream)
            if current is not None and self.continues(line) and current.size + 1 + len(line) <= self.max_bytes:
                current.parts.append(line)
                current.size += 1 + len(line)
                self.joined_lines += 1
                continue
            if current is not None:
                out.append(self._close(stream))
            self._open[stream] = _Open(entry[0], [line], len(line), start, now, entry[3])
        return out

    def take(self, entries: list[Entry], starts: list[Any], position: Any, final: bool) -> tuple[list[Entry], Any]:
        """A source's chunk through the joiner: the entries complete now (all of them when `final`,
        the end of the output or of a file) and the position to queue them with, which never
        passes the start of an entry still open."""
        done = self.add(entries, starts) + self.flush(only_due=not final)
        held = self.held
        return done, held if held is not None and held < position else position

    @property
    def held(self) -> Any:
        """Where the oldest open entry starts (a position to not move past), or None."""
        if not self._open:
            return None
        return min(current.start for current in self._open.values())

    def time_left(self) -> float | None:
        if not self._open:
            return None
        oldest = min(current.opened_at for current in self._open.values())
        return max(0.0, oldest + self.timeout - self.clock())

    def flush(self, only_due: bool = False) -> list[Entry]:
        """Emit open entries: all of them (the log ended), or those open for `timeout` already."""
        now = self.clock()
        due = [stream for stream, current in self._open.items() if not only_due or now - current.opened_at >= self.timeout]
        return sorted((self._close(stream) for stream in due), key=lambda entry: entry[0])

    def discard(self) -> None:
        """Forget open entries: they will be read again from `held` (a stream reconnecting)."""
        self._open.clear()

    def _close(self, stream: str) -> Entry:
        current = self._open.pop(stream)
        return Entry(current.ts_ns, "\n".join(current.parts), stream, current.metadata)
