"""What Loki's answer to one push means for the entries in it. Pure: status + body in, a verdict out.

Written from Loki 3.6's own code paths (pkg/distributor/distributor.go, pkg/ingester/instance.go,
pkg/ingester/stream.go, pkg/validation/validate.go):

* 200/204: stored. (Loki's ingester reports only the result of the *last* stream of a push, so
  a 2xx can hide an earlier stream that was throttled; the sink sends a stream it knows to be
  throttled alone, and a 429 means "at least the named stream".) Another 2xx: stored, noted.
* "ingestion blocked for user ... with status code 'N'" (`block_ingestion_until`; N is 260 by
  default, a 2xx that stored nothing): hold everything and retry, until the time Loki names.
* 400: the distributor stored the valid entries and names the rejected ones: acknowledge, count.
* 401/403/404/405/407: a bad or rotating credential or a wrong URL, not bad data: hold and retry.
* 413: the body is too large for Loki or a proxy in front of it: split.
* 429 "Ingestion rate limit exceeded for user": the distributor's tenant limit; nothing was
  stored: retry the whole push with backoff.
* 429 "... total ignored: N out of M for stream: {...}" (per-stream rate limit, "limit: 256KB/sec")
  and 429 "Maximum active stream limit exceeded when trying to create stream {...}": the named
  stream (with the labels Loki adds: service_name, maybe __stream_shard__) was refused, at least
  in part; other streams of the push were stored, or refused unseen.
* 408, 425, 5xx, no answer: retry the whole push.
* Anything else: undeliverable; dropped, counted and logged.
"""

from __future__ import annotations

import calendar
import enum
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

Key = TypeVar("Key")
SHARD_LABEL = "__stream_shard__"  # added by Loki's stream sharding; the collector never sends it

# Loki's 400 texts, one per rejected entry (or grouped "N errors like: ..."), by its reason names.
_REJECTION_PATTERNS = (
    ("greater_than_max_sample_age", re.compile(r"timestamp too old")),
    ("too_far_in_future", re.compile(r"timestamp too new")),
    ("line_too_long", re.compile(r"Max entry size .* exceeded")),
    ("out_of_order", re.compile(r"out of order|too far behind")),
    ("per_stream_rate_limit", re.compile(r"Per stream rate limit exceeded")),
    ("rate_limited", re.compile(r"Ingestion rate limit exceeded")),
    ("invalid_labels", re.compile(r"error parsing labels|invalid label|parse error", re.I)),
)
_SUMMARY = re.compile(r"^\s*(?:user '[^']*', )?total ignored: \d+ out of \d+")  # the ingester's tally
_GROUPED = re.compile(r"^\s*(\d+) errors like: (.*)$")
_METADATA_DISABLED = re.compile(r"structured metadata is disabled|structured metadata.*not allowed|disallowed.structured.metadata|"
                                r"includes structured metadata, but this feature is disallowed", re.I)

_TENANT_LIMIT = re.compile(r"Ingestion rate limit exceeded")
# stream.go errorForFailedEntries: "user '%s', total ignored: %d out of %d for stream: %s"
_STREAM_THROTTLED = re.compile(r"total ignored: \d+ out of \d+ for stream: (\{.*\})\s*$", re.S)
_STREAM_RATE = re.compile(r"Per stream rate limit exceeded")
# validate.go ErrStreamRateLimit: "(limit: %s/sec)", the limit as datasize.ByteSize prints it
_RATE_LIMIT = re.compile(r"Per stream rate limit exceeded \(limit: (\d+)(B|KB|MB|GB|TB)/sec\)")
_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
# validation.BlockedIngestionErrorMsg: "ingestion blocked for user %s until '%s' with status code '%d'"
_BLOCKED = re.compile(r"ingestion blocked for user .* until '(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(Z|[+-]\d\d:\d\d)'")
_IGNORED = re.compile(r"total ignored: (\d+) out of (\d+) for stream")
# Go's time.Time.String(): "2026-11-23 17:55:21.123456789 +0000 UTC" (fraction without trailing zeros)
_IGNORED_ENTRY = re.compile(r"entry with timestamp (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? ([+-])(\d\d)(\d\d)")
# validation.StreamLimitErrorMsg: "Maximum active stream limit exceeded when trying to create stream %s, reduce ..."
_STREAM_LIMIT = re.compile(r"Maximum active stream limit exceeded when trying to create stream (\{.*?\}), reduce")
_LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_GO_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}

HOLD_STATUSES = frozenset({401, 403, 404, 405, 407})
RETRY_STATUSES = frozenset({408, 425})


class Action(enum.Enum):
    STORED = "stored"  # 2xx
    REJECTED = "rejected"  # 400: the valid entries stored, the named ones rejected for good
    METADATA_OFF = "metadata_off"  # 400 because structured metadata is disabled: resend without it
    RETRY = "retry"  # nothing stored: resend the whole push after a backoff
    HOLD = "hold"  # misconfiguration or blocked ingestion: keep everything, retry at max_backoff
    SPLIT = "split"  # 413: send halves
    STREAM_THROTTLED = "stream_throttled"  # 429 from the ingester: resend only the named stream
    DROP = "drop"  # undeliverable as it is


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str = ""  # a metric label value: "rate_limited", "per_stream_rate_limit", "http_422", ...
    stream: dict[str, str] | None = None  # STREAM_THROTTLED: the named stream's labels, as Loki names it
    rejected: Counter[str] = field(default_factory=Counter)  # REJECTED: entries by Loki's reason
    # STREAM_THROTTLED by the per-stream rate limit: "total ignored: N out of M" and the timestamps
    # of the listed entries (Loki lists at most 10): when all N are listed, only those need resending.
    ignored: int = 0
    out_of: int = 0
    ignored_ts_ns: tuple[int, ...] = ()
    limit_bytes_per_s: int = 0  # STREAM_THROTTLED by the rate limit: what Loki allows the stream (0: not said)
    until_wall: float = 0.0  # HOLD "blocked": when Loki said it accepts pushes again (0: not said)

    def ignored_known(self) -> bool:
        return 0 < self.ignored == len(self.ignored_ts_ns)


def interpret(status: int, body: str) -> Verdict:
    """What to do with a push Loki answered `status` with `body` (status 0: no answer at all)."""
    blocked = _BLOCKED.search(body) if status else None
    if blocked:  # any status: 260 by default, a 2xx that stored nothing
        return Verdict(Action.HOLD, "blocked", until_wall=_blocked_until(blocked))
    if status in (200, 204):
        return Verdict(Action.STORED)
    if 200 <= status < 300:
        return Verdict(Action.STORED, f"http_{status}")  # stored, as far as HTTP says; the sink notes it
    if status == 0:
        return Verdict(Action.RETRY, "unreachable")
    if status == 400:
        if _METADATA_DISABLED.search(body):
            return Verdict(Action.METADATA_OFF, "structured_metadata_disabled")
        return Verdict(Action.REJECTED, "rejected", rejected=rejections_in(body))
    if status in HOLD_STATUSES:
        return Verdict(Action.HOLD, f"http_{status}")
    if status == 413:
        return Verdict(Action.SPLIT, "too_large")
    if status == 429:
        return _throttled(body)
    if status in RETRY_STATUSES or status >= 500:
        return Verdict(Action.RETRY, f"http_{status}")
    return Verdict(Action.DROP, f"http_{status}")


def _throttled(body: str) -> Verdict:
    if _TENANT_LIMIT.search(body):
        return Verdict(Action.RETRY, "rate_limited")
    limit = _STREAM_LIMIT.search(body)
    if limit:
        labels = parse_labels(limit.group(1))
        if labels is not None:
            return Verdict(Action.STREAM_THROTTLED, "stream_limit", labels)
    named = _STREAM_THROTTLED.search(body.strip())
    if named and _STREAM_RATE.search(body):
        labels = parse_labels(named.group(1))
        if labels is not None:
            counts = _IGNORED.search(body)
            ignored, out_of = (int(counts.group(1)), int(counts.group(2))) if counts else (0, 0)
            stamps = tuple(_go_time_ns(match) for match in _IGNORED_ENTRY.finditer(body))
            rate = _RATE_LIMIT.search(body)
            limit = int(rate.group(1)) * _UNITS[rate.group(2)] if rate else 0
            return Verdict(Action.STREAM_THROTTLED, "per_stream_rate_limit", labels,
                           ignored=ignored, out_of=out_of, ignored_ts_ns=stamps, limit_bytes_per_s=limit)
    return Verdict(Action.RETRY, "throttled")  # a 429 from something else (a gateway): nothing stored


def _blocked_until(match: re.Match[str]) -> float:
    """Go's RFC 3339 time (seconds) as Unix time."""
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    zone = match.group(7)
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (1 if zone[0] == "+" else -1)
    return float(calendar.timegm((year, month, day, hour, minute, second)) - offset)


def matching(named: dict[str, str], sent: dict[Key, dict[str, str]]) -> list[Key]:
    """The sent streams (by key) that Loki's name can stand for: every label sent is in the named
    set with the same value (Loki adds labels of its own, service_name among them, before it names
    a stream). A name with Loki's shard label stands for part of a stream only: nothing matches."""
    if SHARD_LABEL in named:
        return []
    return [key for key, labels in sent.items() if all(named.get(name) == value for name, value in labels.items())]


def _go_time_ns(match: re.Match[str]) -> int:
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = int((match.group(7) or "").ljust(9, "0"))
    offset = (int(match.group(9)) * 3600 + int(match.group(10)) * 60) * (1 if match.group(8) == "+" else -1)
    seconds = calendar.timegm((year, month, day, hour, minute, second)) - offset
    return seconds * 1_000_000_000 + fraction


def rejections_in(body: str) -> Counter[str]:
    """Count rejected entries by reason from a Loki 400 body."""
    counts: Counter[str] = Counter()
    for line in body.splitlines():
        if not line.strip() or _SUMMARY.match(line):
            continue
        times = 1
        grouped = _GROUPED.match(line)
        if grouped:
            times, line = int(grouped.group(1)), grouped.group(2)
        reason = next((name for name, pattern in _REJECTION_PATTERNS if pattern.search(line)), "other")
        counts[reason] += times
    return counts


def parse_labels(text: str) -> dict[str, str] | None:
    """Prometheus' `{a="b", c="d"}` (Go-quoted values) as a dict; None when it is not that shape."""
    inner = text.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        return None
    inner = inner[1:-1].strip()
    labels: dict[str, str] = {}
    position = 0
    while position < len(inner):
        match = _LABEL_PAIR.match(inner, position)
        if not match:
            return None
        labels[match.group(1)] = _unquote(match.group(2))
        position = match.end()
    return labels


def _unquote(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    index = 0
    while index < len(value):
        char = value[index]
        if char != "\\" or index + 1 == len(value):
            out.append(char)
            index += 1
            continue
        code = value[index + 1]
        if code in _GO_ESCAPES:
            out.append(_GO_ESCAPES[code])
            index += 2
        elif code in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = value[index + 2:index + 2 + width]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                out.append(value[index:index + 2 + width])
            index += 2 + width
        else:
            out.append(char)
            index += 1
    return "".join(out)


def sentence(text: str, limit: int = 200) -> str:
    """One line of at most `limit` characters, cut at a word boundary (never mid-word)."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"
