"""Per-line processing, per container: drop / keep / redact rules, fields from JSON or logfmt
lines into structured metadata, a timestamp from the line, and a rate limit.

Built once per source from config and the container's `collector.*` Docker labels; `None` when
nothing applies, so a container without processing pays nothing. Dropped lines stay in the chunk's
byte count and position: they are read, counted and skipped, never read again."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from collector.config import ProcessingConfig
from collector.pipeline.entry import Entry
from collector.timefmt import BadTimestamp, parse_timestamp
from collector.transform.saferegex import Matcher, PatternError, compile_untrusted

DROP_LABEL = "collector.drop"
KEEP_LABEL = "collector.keep"
PARSE_LABEL = "collector.parse"
TIMESTAMP_LABEL = "collector.timestamp_format"
RATE_LABEL = "collector.rate_limit"  # lines per second
_LOGFMT_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')
_decode_json = msgspec.json.Decoder().decode


@dataclass(slots=True)
class ProcessingStats:
    """Shared by every container's processor: what /metrics reports."""

    dropped: Counter[str] = field(default_factory=Counter)  # by rule
    rate_limited_lines: int = 0
    rate_limited_bytes: int = 0
    timestamp_fallbacks: int = 0
    problems: int = 0  # bad collector.* processing labels, ignored


class TokenBucket:
    """Lines and bytes per second with a burst of `burst_seconds` worth of each."""

    def __init__(self, lines_per_second: float, bytes_per_second: float, burst_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rates = (lines_per_second, bytes_per_second)
        self._caps = (lines_per_second * burst_seconds, bytes_per_second * burst_seconds)
        self._tokens = list(self._caps)
        self._clock = clock
        self._last = clock()

    def allow(self, nbytes: int) -> bool:
        now = self._clock()
        elapsed, self._last = now - self._last, now
        cost = (1.0, float(nbytes))
        allowed = True
        for i in (0, 1):
            if self._rates[i] <= 0:
                continue
            self._tokens[i] = min(self._caps[i], self._tokens[i] + elapsed * self._rates[i])
            allowed = allowed and self._tokens[i] >= cost[i]
        if allowed:
            for i in (0, 1):
                if self._rates[i] > 0:
                    self._tokens[i] -= cost[i]
        return allowed


def logfmt_fields(line: str, wanted: frozenset[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in _LOGFMT_PAIR.findall(line):
        if key in wanted and key not in found:
            found[key] = value[1:-1].replace('\\"', '"') if value.startswith('"') and len(value) >= 2 else value
    return found


def json_fields(line: str, wanted: frozenset[str]) -> dict[str, str]:
    if not line.startswith("{"):
        return {}
    try:
        document = _decode_json(line)
    except msgspec.DecodeError:
        return {}
    if not isinstance(document, dict):
        return {}
    return {key: value if isinstance(value, str) else msgspec.json.encode(value).decode()
            for key, value in document.items() if key in wanted and value is not None and not isinstance(value, (dict, list))}


class LineTimestamp:
    """A leading timestamp: `rfc3339` (the first word), or a strptime format whose words are the
    line's first words; without a zone in the format, UTC."""

    def __init__(self, fmt: str) -> None:
        self._fmt = fmt
        self._words = 1 if fmt == "rfc3339" else len(fmt.split())

    def parse(self, line: str) -> int | None:
        head = " ".join(line.split(maxsplit=self._words)[: self._words])
        try:
            if self._fmt == "rfc3339":
                return parse_timestamp(head)
            parsed = datetime.strptime(head, self._fmt)
        except (ValueError, BadTimestamp):
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


class LineProcessor:
    def __init__(self, *, drop: list[tuple[str, Matcher]], keep: list[Matcher],
                 redact: list[tuple[re.Pattern[str], str]], parse: str, fields: frozenset[str],
                 timestamp: LineTimestamp | None, rate: TokenBucket | None, stats: ProcessingStats) -> None:
        self._drop, self._keep, self._redact = drop, keep, redact
        self._extract = {"json": json_fields, "logfmt": logfmt_fields}.get(parse) if fields else None
        self._fields = fields
        self._timestamp = timestamp
        self._rate = rate
        self.stats = stats

    def process(self, entries: list[Entry]) -> list[Entry]:
        kept: list[Entry] = []
        stats = self.stats
        for entry in entries:
            line = entry.line
            rule = self._dropped_by(line)
            if rule:
                stats.dropped[rule] += 1
                continue
            if self._rate is not None and not self._rate.allow(len(line)):
                stats.rate_limited_lines += 1
                stats.rate_limited_bytes += len(line)
                continue
            for pattern, replacement in self._redact:
                line = pattern.sub(replacement, line)
            ts_ns, metadata = entry.ts_ns, entry.attrs
            if self._timestamp is not None:
                parsed = self._timestamp.parse(line)
                if parsed is None:
                    stats.timestamp_fallbacks += 1  # Docker's time stays
                else:
                    ts_ns = parsed
            if self._extract is not None:
                found = self._extract(line, self._fields)
                if found:
                    metadata = {**metadata, **found} if metadata else found
            kept.append(Entry(ts_ns, line, entry.stream, metadata))
        return kept

    def _dropped_by(self, line: str) -> str:
        for name, pattern in self._drop:
            if pattern.search(line):
                return name
        if self._keep and not any(pattern.search(line) for pattern in self._keep):
            return "keep"
        return ""


def build_processor(config: ProcessingConfig, docker_labels: dict[str, str], stats: ProcessingStats,
                    problems: list[str]) -> LineProcessor | None:
    """The container's processor, or None when nothing applies; bad labels go to `problems`."""

    def label_regex(name: str) -> Matcher | None:
        # A container's own pattern: RE2, so no line can make it backtrack for minutes.
        text = docker_labels.get(name, "")
        if not text:
            return None
        try:
            return compile_untrusted(text)
        except PatternError as err:
            problems.append(f"{name}={text!r}: {err}; ignored")
            return None

    drop: list[tuple[str, Matcher]] = [(f"drop[{i}]", re.compile(text)) for i, text in enumerate(config.drop)]
    keep: list[Matcher] = [re.compile(text) for text in config.keep]
    own_drop, own_keep = label_regex(DROP_LABEL), label_regex(KEEP_LABEL)
    if own_drop is not None:
        drop.append((f"label {DROP_LABEL}", own_drop))
    if own_keep is not None:
        keep = [own_keep]  # the container's own keep rule replaces the global ones
    redact = [(re.compile(rule.regex), rule.replacement) for rule in config.redact]
    parse = docker_labels.get(PARSE_LABEL, config.parse).strip()
    if parse not in ("none", "json", "logfmt"):
        problems.append(f"{PARSE_LABEL}={parse!r}: not one of none, json, logfmt; ignored")
        parse = config.parse
    fmt = docker_labels.get(TIMESTAMP_LABEL, config.timestamp_format).strip()
    lines_per_second = float(config.rate_limit.lines_per_second)
    if RATE_LABEL in docker_labels:
        try:
            lines_per_second = float(docker_labels[RATE_LABEL])
        except ValueError:
            problems.append(f"{RATE_LABEL}={docker_labels[RATE_LABEL]!r}: not a number of lines per second; ignored")
    rate = None
    if lines_per_second > 0 or config.rate_limit.bytes_per_second > 0:
        rate = TokenBucket(lines_per_second, float(config.rate_limit.bytes_per_second), float(config.rate_limit.burst))
    fields = frozenset(config.fields) | frozenset(config.field_labels) if parse != "none" else frozenset()
    if not (drop or keep or redact or fields or fmt or rate):
        return None
    return LineProcessor(drop=drop, keep=keep, redact=redact, parse=parse, fields=fields,
                         timestamp=LineTimestamp(fmt) if fmt else None, rate=rate, stats=stats)
