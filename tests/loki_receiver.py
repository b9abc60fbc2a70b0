"""A Loki-compatible push receiver for integration tests.

It mimics what a real Loki distributor does with ``POST /loki/api/v1/push``
closely enough that encoder bugs show up here instead of in production:

* body handling follows ``pkg/loghttp/push``: the Content-Type header is
  mandatory, ``application/json`` is JSON, anything else is *raw* (block,
  unframed) snappy-compressed protobuf; ``Content-Encoding`` may be ``gzip``,
  ``deflate`` (raw DEFLATE, as Go's ``compress/flate``), ``snappy`` (a no-op
  hint) or absent;
* stream labels and entries are validated like ``pkg/distributor`` /
  ``pkg/validation`` (same reasons and error message texts, errors grouped
  like ``util.GroupedErrors``), valid entries are kept even when others in the
  same push are rejected, and the push then answers 400;
* the protobuf decoder is written by hand, independently of the collector's
  encoder, so both cannot share a bug.

Deliberate deviation from Loki (the test-suite wants it): with
``allow_structured_metadata=False`` a push carrying any structured metadata is
rejected *as a whole* (Loki rejects only the affected entries).

Faults (scripted error statuses, delays, dropped connections, "down") can be
injected at runtime; everything runs on the test's event loop, so no locking.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import json
import re
import ssl
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import cramjam
from aiohttp import web
from multidict import CIMultiDict
from polling import wait_until

__all__ = [
    "LokiReceiver",
    "Received",
    "Rejected",
    "RequestRecord",
    "ProtoError",
    "LabelError",
    "RawStream",
    "RawEntry",
    "decode_push_request",
    "parse_label_string",
    "format_labels",
]

PUSH_PATH = "/loki/api/v1/push"
# limits_config.discover_service_name's default (pkg/validation/limits.go, Loki 3.6)
DISCOVER_SERVICE_NAME = ("service", "app", "application", "app_name", "name", "app_kubernetes_io_name", "container",
                         "container_name", "k8s_container_name", "component", "workload", "job", "k8s_job_name")
READY_PATH = "/ready"

# ---------------------------------------------------------------------------
# Protobuf wire format (only what push.proto needs)
# ---------------------------------------------------------------------------

WT_VARINT, WT_I64, WT_LEN, WT_I32 = 0, 1, 2, 5
_U64 = 1 << 64

# google.protobuf.Timestamp valid range (0001-01-01 .. 9999-12-31), checked by
# gogoproto's StdTimeUnmarshal, so Loki rejects anything outside it.
_MIN_TS_SECONDS = -62135596800
_MAX_TS_SECONDS = 253402300800


class ProtoError(ValueError):
    """Malformed protobuf input."""


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode one base-128 varint; return (value, new position)."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("proto: truncated varint")
        b = buf[pos]
        pos += 1
        # The 10th byte may only carry the single remaining bit of a uint64.
        if shift == 63 and b > 1:
            raise ProtoError("proto: varint overflows 64 bits")
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) for every field of a message.

    Varint/fixed values come back as unsigned ints, length-delimited ones as
    bytes. Unknown fields are therefore skipped simply by ignoring them.
    """
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field_no, wire_type = key >> 3, key & 7
        if field_no == 0:
            raise ProtoError("proto: illegal field number 0")
        if wire_type == WT_VARINT:
            value, pos = _read_varint(buf, pos)
            yield field_no, wire_type, value
        elif wire_type == WT_I64:
            if pos + 8 > end:
                raise ProtoError("proto: truncated fixed64")
            yield field_no, wire_type, int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire_type == WT_I32:
            if pos + 4 > end:
                raise ProtoError("proto: truncated fixed32")
            yield field_no, wire_type, int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        elif wire_type == WT_LEN:
            length, pos = _read_varint(buf, pos)
            if length > end - pos:
                raise ProtoError("proto: length-delimited field runs past end of message")
            yield field_no, wire_type, buf[pos : pos + length]
            pos += length
        else:
            # Groups (3/4) are long deprecated and 6/7 do not exist.
            raise ProtoError(f"proto: unsupported wire type {wire_type}")


def _expect(wire_type: int, want: int, what: str) -> None:
    # gogoproto rejects a known field carrying the wrong wire type; so do we.
    if wire_type != want:
        raise ProtoError(f"proto: wrong wire type {wire_type} for field {what}")


def _text(raw: int | bytes) -> str:
    # Go strings are arbitrary bytes; surrogateescape keeps invalid UTF-8
    # lossless (recover it with .encode("utf-8", "surrogateescape")).
    assert isinstance(raw, bytes)
    return raw.decode("utf-8", "surrogateescape")


@dataclass(slots=True)
class RawEntry:
    """One decoded entry before validation."""

    ts_ns: int
    line: str
    line_size: int  # bytes, as Loki measures len(entry.Line)
    metadata: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class RawStream:
    """One decoded stream before validation; labels exactly as sent."""

    labels: str
    entries: list[RawEntry] = field(default_factory=list)
    # JSON streams arrive as a map; keep it so names need no re-parsing.
    label_pairs: list[tuple[str, str]] | None = None


def _decode_timestamp(buf: bytes, seconds: int, nanos: int) -> tuple[int, int]:
    # Starts from the previous values: a repeated embedded message merges.
    for no, wt, val in _iter_fields(buf):
        if no == 1:
            _expect(wt, WT_VARINT, "Timestamp.seconds")
            assert isinstance(val, int)
            seconds = val - _U64 if val >= 1 << 63 else val  # int64
        elif no == 2:
            _expect(wt, WT_VARINT, "Timestamp.nanos")
            assert isinstance(val, int)
            val &= 0xFFFFFFFF  # int32 is sign-extended to 64 bits on the wire
            nanos = val - (1 << 32) if val >= 1 << 31 else val
    return seconds, nanos


def _decode_label_pair(buf: bytes) -> tuple[str, str]:
    name = value = ""
    for no, wt, val in _iter_fields(buf):
        if no == 1:
            _expect(wt, WT_LEN, "LabelPairAdapter.name")
            name = _text(val)
        elif no == 2:
            _expect(wt, WT_LEN, "LabelPairAdapter.value")
            value = _text(val)
    return name, value


def _decode_entry(buf: bytes) -> RawEntry:
    seconds = nanos = 0
    line = b""
    metadata: list[tuple[str, str]] = []
    for no, wt, val in _iter_fields(buf):
        if no == 1:
            _expect(wt, WT_LEN, "EntryAdapter.timestamp")
            assert isinstance(val, bytes)
            seconds, nanos = _decode_timestamp(val, seconds, nanos)
        elif no == 2:
            _expect(wt, WT_LEN, "EntryAdapter.line")
            assert isinstance(val, bytes)
            line = val
        elif no == 3:
            _expect(wt, WT_LEN, "EntryAdapter.structuredMetadata")
            assert isinstance(val, bytes)
            metadata.append(_decode_label_pair(val))
    if not (_MIN_TS_SECONDS <= seconds < _MAX_TS_SECONDS) or not (0 <= nanos < 1_000_000_000):
        raise ProtoError(f"proto: invalid timestamp seconds={seconds} nanos={nanos}")
    return RawEntry(
        ts_ns=seconds * 1_000_000_000 + nanos,
        line=line.decode("utf-8", "surrogateescape"),
        line_size=len(line),
        metadata=metadata,
    )


def _decode_stream(buf: bytes) -> RawStream:
    stream = RawStream(labels="")
    for no, wt, val in _iter_fields(buf):
        if no == 1:
            _expect(wt, WT_LEN, "StreamAdapter.labels")
            stream.labels = _text(val)
        elif no == 2:
            _expect(wt, WT_LEN, "StreamAdapter.entries")
            assert isinstance(val, bytes)
            stream.entries.append(_decode_entry(val))
        elif no == 3:
            _expect(wt, WT_VARINT, "StreamAdapter.hash")  # value unused, like Loki
    return stream


def decode_push_request(data: bytes) -> list[RawStream]:
    """Decode an (uncompressed) logproto.PushRequest. Raises ProtoError."""
    streams: list[RawStream] = []
    for no, wt, val in _iter_fields(bytes(data)):
        if no == 1:
            _expect(wt, WT_LEN, "PushRequest.streams")
            assert isinstance(val, bytes)
            streams.append(_decode_stream(val))
    return streams


# ---------------------------------------------------------------------------
# Label strings: {name="value", ...} with Go/PromQL string literals
# ---------------------------------------------------------------------------

LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_NAME_STOP = set(" \t\r\n=,{}\"'`!~")
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
}
_HEX = set("0123456789abcdefABCDEF")


class LabelError(ValueError):
    """A label string that Loki's parser would refuse."""


def _unquote(s: str, i: int) -> tuple[str, int]:
    """Read a Go string literal ("...", '...' or `...`) starting at s[i]."""
    quote = s[i]
    i += 1
    out = bytearray()  # \x and octal escapes produce raw bytes, as in Go
    n = len(s)
    while True:
        if i >= n:
            raise LabelError("unterminated quoted string")
        c = s[i]
        if c == quote:
            i += 1
            break
        if quote == "`":  # raw string: no escapes at all
            out += c.encode()
            i += 1
            continue
        if c == "\n":
            raise LabelError("newline in quoted string")
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        if i + 1 >= n:
            raise LabelError("unterminated escape sequence")
        esc = s[i + 1]
        i += 2
        if esc in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[esc].encode()
        elif esc == quote:
            out += quote.encode()
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = s[i : i + width]
            if len(digits) != width or not set(digits) <= _HEX:
                raise LabelError(f"invalid \\{esc} escape")
            i += width
            code = int(digits, 16)
            if esc == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise LabelError(f"invalid unicode escape \\{esc}{digits}")
            else:
                out += chr(code).encode()
        elif esc in "01234567":
            digits = s[i - 1 : i + 2]
            if len(digits) != 3 or not set(digits) <= set("01234567") or int(digits, 8) > 255:
                raise LabelError("invalid octal escape")
            i += 2
            out.append(int(digits, 8))
        else:
            raise LabelError(f"unknown escape sequence \\{esc}")
    try:
        return out.decode("utf-8"), i
    except UnicodeDecodeError:
        raise LabelError("invalid UTF-8 in label value") from None


def parse_label_string(s: str) -> list[tuple[str, str]]:
    """Parse ``{a="b", c="d"}`` into pairs in the order written.

    Name *syntax* is checked later (see LokiReceiver) so that the same
    validation applies to JSON streams; here we only tokenize.
    """
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise LabelError("invalid UTF-8 in label string") from None
    n = len(s)
    i = 0

    def skip_ws() -> None:
        nonlocal i
        while i < n and s[i] in " \t\r\n":
            i += 1

    def fail(what: str) -> LabelError:
        got = repr(s[i]) if i < n else "end of input"
        return LabelError(f"1:{i + 1}: parse error: {what}, got {got}")

    skip_ws()
    if i >= n or s[i] != "{":
        raise fail("expected '{'")
    i += 1
    pairs: list[tuple[str, str]] = []
    while True:
        skip_ws()
        if i < n and s[i] == "}":
            i += 1
            break
        start = i
        while i < n and s[i] not in _NAME_STOP:
            i += 1
        name = s[start:i]
        if not name:
            raise fail("expected label name")
        skip_ws()
        if i >= n or s[i] != "=":
            raise fail(f"expected '=' after label name {name!r}")
        i += 1
        skip_ws()
        if i >= n or s[i] not in "\"'`":
            raise fail(f"expected quoted value for label {name!r}")
        value, i = _unquote(s, i)
        pairs.append((name, value))
        skip_ws()
        if i < n and s[i] == ",":
            i += 1
            continue  # a trailing comma before '}' is allowed, as in PromQL
        if i < n and s[i] == "}":
            i += 1
            break
        raise fail("expected ',' or '}'")
    skip_ws()
    if i != n:
        raise fail("unexpected trailing characters")
    return pairs


def _go_quote(value: str) -> str:
    """Approximation of Go's strconv.Quote, used for canonical label strings."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif code < 0x20 or code == 0x7F or 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code & 0xFF:02x}")
        elif code > 0x7F and not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_labels(labels: dict[str, str] | list[tuple[str, str]]) -> str:
    """Prometheus ``labels.Labels.String()``: sorted, ``{a="b", c="d"}``."""
    items = sorted(labels.items() if isinstance(labels, dict) else labels)
    return "{" + ", ".join(f"{k}={_go_quote(v)}" for k, v in items) + "}"


# ---------------------------------------------------------------------------
# Records kept by the receiver
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class Received:
    """One accepted log entry."""

    labels: dict[str, str]
    ts_ns: int
    line: str
    metadata: dict[str, str]
    tenant: str | None
    received_at: float = 0.0  # wall clock when its push arrived (for latency measurements)


@dataclass(slots=True)
class Rejected:
    """One entry discarded by validation (reason as in loki_discarded_samples_total)."""

    reason: str
    message: str
    stream: str  # label string as sent (or canonical for JSON)
    ts_ns: int
    line: str
    tenant: str | None


@dataclass(slots=True)
class RequestRecord:
    """What the receiver saw of one push request and what it answered."""

    method: str
    path: str
    content_type: str | None  # raw header, None when absent
    content_encoding: str | None
    tenant: str | None  # X-Scope-OrgID
    authorization: str | None
    headers: CIMultiDict[str]
    body_size: int = 0  # bytes on the wire, before any decoding
    received_at: float = field(default_factory=time.time)
    status: int | None = None  # None: dropped on purpose, or still being handled
    response_body: str = ""
    fault: str | None = None  # "status" / "delay" / "drop" / "down" when injected
    accepted: int = 0
    rejected: int = 0
    duration_s: float = 0.0


# A scripted fault: ("status", code[, headers[, body]]), ("delay", seconds), ("drop",)
Fault = tuple[Any, ...]


def _check_fault(fault: Fault) -> Fault:
    """Validate and normalise a fault tuple early, so typos fail in the test."""
    if not fault:
        raise ValueError("empty fault")
    kind = fault[0]
    if kind == "status":
        if len(fault) < 2 or len(fault) > 4 or not isinstance(fault[1], int):
            raise ValueError(f"bad status fault {fault!r}; want ('status', code, headers, body)")
        headers = fault[2] if len(fault) > 2 and fault[2] is not None else {}
        body = fault[3] if len(fault) > 3 and fault[3] is not None else ""
        return ("status", fault[1], dict(headers), body)
    if kind == "delay":
        if len(fault) != 2 or not isinstance(fault[1], (int, float)) or fault[1] < 0:
            raise ValueError(f"bad delay fault {fault!r}; want ('delay', seconds)")
        return ("delay", float(fault[1]))
    if kind == "drop":
        if len(fault) != 1:
            raise ValueError(f"bad drop fault {fault!r}; want ('drop',)")
        return ("drop",)
    raise ValueError(f"unknown fault kind {kind!r}")


class _BadRequest(Exception):
    """Whole-request failure answered with an HTTP status and a text body."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _InvalidStream(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _rfc3339(ts_ns: int) -> str:
    # Go's time.Format(time.RFC3339): whole seconds, UTC "Z".
    try:
        dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ts_ns // 1_000_000_000)
    except OverflowError:
        return str(ts_ns)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _grouped_errors(messages: list[str]) -> str:
    # util.GroupedErrors: identical messages collapse into "N errors like: ...".
    counts = Counter(messages)
    many = len(counts) > 1
    return "; ".join(
        (f"{n} errors like: {msg}" if many or n > 1 else msg) for msg, n in counts.items()
    )


_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_INT64_RE = re.compile(r"[+-]?[0-9]+\Z")


def _media_type(header: str | None) -> str:
    """mime.ParseMediaType, reduced to what Loki needs: the lower-cased type."""
    if header is None or not header.split(";", 1)[0].strip():
        raise _BadRequest("mime: no media type")
    media = header.split(";", 1)[0].strip().lower()
    if not _TOKEN_RE.match(media):
        raise _BadRequest(f"mime: invalid media type {media!r}")
    return media


# ---------------------------------------------------------------------------
# The receiver
# ---------------------------------------------------------------------------


class LokiReceiver:
    """In-process fake Loki accepting pushes on ``/loki/api/v1/push``."""

    def __init__(
        self,
        *,
        max_line_size: int = 262144,
        reject_old_samples: bool = True,
        reject_old_samples_max_age_s: float = 7 * 24 * 3600,
        creation_grace_period_s: float = 600,
        allow_structured_metadata: bool = True,
        max_structured_metadata_size: int = 64 * 1024,
        max_structured_metadata_entries: int = 128,
        max_label_names_per_series: int = 15,
        max_label_name_length: int = 1024,
        max_label_value_length: int = 2048,
        require_basic: tuple[str, str] | None = None,
        require_bearer: str | None = None,
        require_tenant: bool = False,
        client_max_size: int = 64 * 1024 * 1024,
        shutdown_timeout: float = 1.0,
        max_push_bytes: int = 0,
        tenant_rate_limit: tuple[float, float] | None = None,
        stream_rate_limit: tuple[float, float] | None = None,
        stream_rate_limit_match: dict[str, str] | None = None,
        max_streams: int = 0,
        shard_label: bool = False,
        shard_streams: bool = False,
        discover_service_name: tuple[str, ...] | None = DISCOVER_SERVICE_NAME,
        block_ingestion_until: float = 0.0,
        block_ingestion_status_code: int = 260,
    ) -> None:
        # Limits; 0 disables a size/count limit, as in Loki.
        self.max_line_size = max_line_size
        self.reject_old_samples = reject_old_samples
        self.reject_old_samples_max_age_s = reject_old_samples_max_age_s
        self.creation_grace_period_s = creation_grace_period_s
        self.allow_structured_metadata = allow_structured_metadata
        self.max_structured_metadata_size = max_structured_metadata_size
        self.max_structured_metadata_entries = max_structured_metadata_entries
        self.max_label_names_per_series = max_label_names_per_series
        self.max_label_name_length = max_label_name_length
        self.max_label_value_length = max_label_value_length
        # Auth, as a gateway in front of Loki (basic/bearer) or Loki itself (tenant).
        self.require_basic = require_basic
        self.require_bearer = require_bearer
        self.require_tenant = require_tenant
        self.refused_tenants: set[str] = set()  # answered 401 (tests turn it on and off)
        self.client_max_size = client_max_size
        self.shutdown_timeout = shutdown_timeout
        # Loki's limits, each as Loki 3.6 applies it (0 / None: off):
        # a body above max_push_bytes is a 413 (a gateway's client_max_body_size);
        # tenant_rate_limit (bytes/s, burst): the distributor's ingestion rate limit, whole push 429;
        # stream_rate_limit (bytes/s, burst): the ingester's per-stream limiter, for streams whose
        # labels include stream_rate_limit_match (all when None); max_streams: active streams.
        self.max_push_bytes = max_push_bytes
        self.tenant_rate_limit = tenant_rate_limit
        self.stream_rate_limit = stream_rate_limit
        self.stream_rate_limit_match = stream_rate_limit_match
        self.max_streams = max_streams
        self.shard_label = shard_label  # name streams in errors with Loki's __stream_shard__ label
        # limits_config.shard_streams.enabled: the ingester then limits a stream's push as a whole
        # (stream.go, rateLimitWholeStream): all of it stored, or all of it refused.
        self.shard_streams = shard_streams
        # limits_config.discover_service_name (push.go): Loki adds service_name from the first of
        # these labels a stream has (else unknown_service) before it stores or names the stream.
        self.discover_service_name = discover_service_name
        # limits_config.block_ingestion_until (wall time) and its status code (validator.go).
        self.block_ingestion_until = block_ingestion_until
        self.block_ingestion_status_code = block_ingestion_status_code
        self._tenant_buckets: dict[str | None, TokenBucket] = {}
        self._stream_buckets: dict[str, TokenBucket] = {}
        self._active_streams: set[str] = set()

        # Fault injection, consumed one per push request.
        self.faults: deque[Fault] = deque()
        self.down = False

        # Observations.
        self.received: list[Received] = []
        self.rejected_entries: list[Rejected] = []
        self.requests: list[RequestRecord] = []
        self.rejected_by_reason: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.unsorted_label_strings = 0
        self.noncanonical_label_strings = 0

        self.base_url: str | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None) -> str:
        """Start listening (HTTPS with `ssl_context`); return the base URL, e.g. ``http://127.0.0.1:43127``."""
        if self._runner is not None:
            raise RuntimeError("receiver already started")
        app = web.Application(client_max_size=self.client_max_size)
        app.router.add_post(PUSH_PATH, self._handle_push)
        app.router.add_get(READY_PATH, self._handle_ready)
        # auto_decompress=False: Content-Encoding is handled by us, like Loki,
        # so an unsupported or lying encoding is visible. No access log noise.
        runner = web.AppRunner(
            app,
            access_log=None,
            auto_decompress=False,
            shutdown_timeout=self.shutdown_timeout,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"{'https' if ssl_context else 'http'}://{shown}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening; in-flight handlers get ``shutdown_timeout`` seconds."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> LokiReceiver:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def push_url(self) -> str:
        if self.base_url is None:
            raise RuntimeError("receiver not started")
        return self.base_url + PUSH_PATH

    @property
    def port(self) -> int:
        if self.base_url is None:
            raise RuntimeError("receiver not started")
        return int(self.base_url.rsplit(":", 1)[1])

    # -- fault injection ---------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Append scripted responses, consumed one per push request."""
        for fault in faults:
            self.faults.append(_check_fault(fault))

    def fail_next(
        self, n: int, status: int = 500, headers: dict[str, str] | None = None, body: str = ""
    ) -> None:
        self.script(*[("status", status, headers, body)] * n)

    def delay_next(self, n: int, seconds: float) -> None:
        self.script(*[("delay", seconds)] * n)

    def drop_next(self, n: int) -> None:
        self.script(*[("drop",)] * n)

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- queries -----------------------------------------------------------

    def entries(
        self, labels_filter: dict[str, str] | None = None, *, tenant: str | None = None
    ) -> list[Received]:
        """Accepted entries (arrival order) whose labels include ``labels_filter``."""
        wanted = (labels_filter or {}).items()
        return [
            e
            for e in self.received
            if all(e.labels.get(k) == v for k, v in wanted)
            and (tenant is None or e.tenant == tenant)
        ]

    def lines(
        self, labels_filter: dict[str, str] | None = None, *, tenant: str | None = None
    ) -> list[str]:
        return [e.line for e in self.entries(labels_filter, tenant=tenant)]

    def statuses(self) -> list[int | None]:
        """Status of every push request so far (None = dropped or still in flight)."""
        return [r.status for r in self.requests]

    def clear(self) -> None:
        """Forget received data and counters; settings and queued faults stay."""
        self.received.clear()
        self.rejected_entries.clear()
        self.requests.clear()
        self.rejected_by_reason.clear()
        self.counters.clear()
        self.unsorted_label_strings = 0
        self.noncanonical_label_strings = 0

    def summary(self) -> str:
        """One-line state dump, used in timeout messages."""
        return (
            f"entries={len(self.received)} requests={len(self.requests)} "
            f"statuses={dict(Counter(self.statuses()))} "
            f"rejected={dict(self.rejected_by_reason)} pending_faults={len(self.faults)} "
            f"down={self.down} last_error={self._last_error()!r}"
        )

    def _last_error(self) -> str | None:
        for r in reversed(self.requests):
            if r.status not in (None, 204):
                return f"{r.status}: {r.response_body.strip()[:300]}"
        return None

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 60,
        *,
        interval: float = 0.05,
        what: str | None = None,
    ) -> Any:
        """Poll ``predicate`` (sync or async) every ``interval`` s until truthy.

        Returns the truthy value; raises TimeoutError describing the receiver
        state so a failing integration test says what actually arrived.
        """
        desc = what or getattr(predicate, "__qualname__", repr(predicate))
        return await wait_until(predicate, timeout, interval=interval,
                                what=lambda: f"{desc}; receiver: {self.summary()}")

    # -- HTTP handlers -----------------------------------------------------

    async def _handle_ready(self, request: web.Request) -> web.Response:
        self.counters["ready_requests"] += 1
        if self.down:
            return web.Response(status=503, text="Ingester not ready: receiver is down\n")
        return web.Response(status=200, text="ready\n")

    async def _handle_push(self, request: web.Request) -> web.StreamResponse:
        headers = request.headers
        rec = RequestRecord(
            method=request.method,
            path=request.path,
            content_type=headers.get("Content-Type"),
            content_encoding=headers.get("Content-Encoding"),
            tenant=headers.get("X-Scope-OrgID"),
            authorization=headers.get("Authorization"),
            headers=CIMultiDict(headers),
        )
        self.requests.append(rec)
        self.counters["requests"] += 1
        started = time.monotonic()
        # Read the whole body first, whatever happens next: answering early
        # would leave the client writing into a closed socket (EPIPE) instead
        # of seeing the status or disconnection we mean to show it.
        try:
            body = await request.read()
        except web.HTTPException as exc:  # e.g. 413 beyond client_max_size
            rec.status, rec.response_body = exc.status, exc.text or ""
            raise
        rec.body_size = len(body)
        try:
            response = await self._respond(request, rec, body)
        finally:
            rec.duration_s = time.monotonic() - started
        if response is None:  # dropped
            self.counters["dropped"] += 1
            return web.Response(status=204)  # never reaches the client
        rec.status = response.status
        if isinstance(response.body, bytes):
            rec.response_body = response.body.decode("utf-8", "replace")
        self.counters[f"status_{response.status}"] += 1
        return response

    async def _respond(
        self, request: web.Request, rec: RequestRecord, body: bytes
    ) -> web.Response | None:
        if self.down:
            rec.fault = "down"
            return _text_response(503, "receiver is down")
        if self.faults:  # at most one scripted fault per request
            fault = self.faults.popleft()
            self.counters["faults_injected"] += 1
            rec.fault = fault[0]
            if fault[0] == "status":
                _, status, fheaders, fbody = fault
                data = fbody.encode() if isinstance(fbody, str) else bytes(fbody)
                return web.Response(status=status, headers=fheaders, body=data)
            if fault[0] == "drop":
                # Close without answering: the client sees a disconnection.
                # aiohttp then silently fails to write the handler's response.
                assert request.transport is not None
                request.transport.close()
                return None
            # "delay": wait, then handle normally (storage happens even if the
            # client gave up meanwhile, as with a slow real Loki -> duplicates).
            await asyncio.sleep(fault[1])

        auth_error = self._check_auth(request)
        if auth_error is not None:
            return auth_error
        if self.max_push_bytes and len(body) > self.max_push_bytes:
            self.counters["too_large"] += 1
            return web.Response(status=413, text=_NGINX_413, content_type="text/html")
        try:
            streams = self._decode_body(request, body)
            return self._ingest(streams, rec)
        except _BadRequest as exc:
            self.counters["bad_requests"] += 1
            return _text_response(exc.status, str(exc))

    def _check_auth(self, request: web.Request) -> web.Response | None:
        if self.require_basic is not None or self.require_bearer is not None:
            header = request.headers.get("Authorization", "")
            ok = False
            if self.require_basic is not None and header[:6].lower() == "basic ":
                ok = _decode_basic(header[6:]) == tuple(self.require_basic)
            if self.require_bearer is not None and header[:7].lower() == "bearer ":
                ok = ok or header[7:].strip() == self.require_bearer
            if not ok:
                self.counters["unauthorized"] += 1
                scheme = "Basic realm=\"loki\"" if self.require_basic is not None else "Bearer"
                resp = _text_response(401, "Unauthorized")
                resp.headers["WWW-Authenticate"] = scheme
                return resp
        if request.headers.get("X-Scope-OrgID") in self.refused_tenants:
            # A gateway that refuses one tenant (its credentials revoked): that tenant only.
            self.counters["unauthorized"] += 1
            return _text_response(401, "Unauthorized")
        if self.require_tenant and not request.headers.get("X-Scope-OrgID"):
            # What Loki answers with auth_enabled: true and no tenant header.
            self.counters["unauthorized"] += 1
            return _text_response(401, "no org id")
        if self.require_tenant and (refusal := _tenant_refusal(request.headers["X-Scope-OrgID"])) is not None:
            # The push handler's tenant.TenantID (with auth_enabled: false Loki ignores the header).
            self.counters["bad_requests"] += 1
            return _text_response(400, refusal)
        return None

    # -- body decoding -----------------------------------------------------

    def _decode_body(self, request: web.Request, body: bytes) -> list[RawStream]:
        encoding = request.headers.get("Content-Encoding", "")
        if encoding in ("", "snappy"):
            pass  # "snappy" is only a hint; the proto path snappy-decodes anyway
        elif encoding == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error) as exc:
                raise _BadRequest(f"gzip: invalid body: {exc}") from None
        elif encoding == "deflate":
            # Go's compress/flate is raw DEFLATE (no zlib header).
            d = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                body = d.decompress(body) + d.flush()
            except zlib.error as exc:
                raise _BadRequest(f"flate: invalid body: {exc}") from None
            if not d.eof:
                raise _BadRequest("flate: unexpected EOF")
        else:
            raise _BadRequest(f'Content-Encoding "{encoding}" not supported')

        media = _media_type(request.headers.get("Content-Type"))
        if media == "application/json":
            self.counters["json_requests"] += 1
            return _decode_json(body)
        self.counters["protobuf_requests"] += 1
        if not body:
            raise _BadRequest("snappy: corrupt input (empty body)")
        try:
            raw = bytes(cramjam.snappy.decompress_raw(body))
        except Exception as exc:  # cramjam.DecompressionError and friends
            raise _BadRequest(f"snappy: corrupt input: {exc}") from None
        try:
            return decode_push_request(raw)
        except ProtoError as exc:
            raise _BadRequest(str(exc)) from None

    # -- validation and storage --------------------------------------------

    def _stream_labels(self, stream: RawStream) -> dict[str, str]:
        """Parse and validate a stream's labels like distributor.parseStreamLabels."""
        raw = stream.labels
        if stream.label_pairs is not None:
            pairs = stream.label_pairs
        else:
            try:
                pairs = parse_label_string(raw)
            except LabelError as exc:
                raise _InvalidStream(
                    "invalid_labels", f"Error parsing labels '{raw}' with error: {exc}"
                ) from None
            self.counters["label_strings"] += 1
            names = [k for k, _ in pairs]
            if names != sorted(names):
                self.unsorted_label_strings += 1
            if raw != format_labels(pairs):
                self.noncanonical_label_strings += 1
        for name, _ in pairs:
            if not LABEL_NAME_RE.match(name):
                raise _InvalidStream(
                    "invalid_labels",
                    f"Error parsing labels '{raw}' with error: invalid label name {name!r}",
                )
        # Empty values mean "no label" in Prometheus; Loki's ParseLabels drops them.
        pairs = sorted((k, v) for k, v in pairs if v != "")
        # push.go, before any validation: service_name from the first listed label the stream has.
        present = dict(pairs)
        if self.discover_service_name and "service_name" not in present:
            pairs = sorted([*pairs, ("service_name", next(
                (present[n] for n in self.discover_service_name if present.get(n)), "unknown_service"))])
        if not pairs:
            raise _InvalidStream(
                "missing_labels",
                f"error at least one label pair is required per stream (stream '{raw}')",
            )
        if len(pairs) > self.max_label_names_per_series:
            raise _InvalidStream(
                "max_label_names_per_series",
                f"entry for stream '{raw}' has {len(pairs)} label names; "
                f"limit {self.max_label_names_per_series}",
            )
        last = None
        for name, value in pairs:
            if len(name.encode()) > self.max_label_name_length:
                raise _InvalidStream(
                    "label_name_too_long", f"stream '{raw}' has label name too long: '{name}'"
                )
            if len(value.encode("utf-8", "surrogatepass")) > self.max_label_value_length:
                raise _InvalidStream(
                    "label_value_too_long", f"stream '{raw}' has label value too long: '{value}'"
                )
            if name == last:
                raise _InvalidStream(
                    "duplicate_label_names", f"stream '{raw}' has duplicate label name: '{name}'"
                )
            last = name
        return dict(pairs)

    def _validate_entry(self, stream: str, entry: RawEntry, now_ns: int) -> tuple[str, str] | None:
        """Validator.ValidateEntry: return (reason, message) or None when valid."""
        oldest = now_ns - int(self.reject_old_samples_max_age_s * 1e9)
        if self.reject_old_samples and entry.ts_ns < oldest:
            return (
                "greater_than_max_sample_age",
                f"entry for stream '{stream}' has timestamp too old: {_rfc3339(entry.ts_ns)}, "
                f"oldest acceptable timestamp is: {_rfc3339(oldest)}",
            )
        if entry.ts_ns > now_ns + int(self.creation_grace_period_s * 1e9):
            return (
                "too_far_in_future",
                f"entry for stream '{stream}' has timestamp too new: {_rfc3339(entry.ts_ns)}",
            )
        if self.max_line_size and entry.line_size > self.max_line_size:
            return (
                "line_too_long",
                f"Max entry size '{self.max_line_size}' bytes exceeded for stream '{stream}' "
                f"while adding an entry with length '{entry.line_size}' bytes",
            )
        if entry.metadata:
            size = sum(
                len(k.encode("utf-8", "surrogateescape")) + len(v.encode("utf-8", "surrogateescape"))
                for k, v in entry.metadata
            )
            if self.max_structured_metadata_size and size > self.max_structured_metadata_size:
                return (
                    "structured_metadata_too_large",
                    f"stream '{stream}' has structured metadata too large: '{size}' bytes, "
                    f"limit: '{self.max_structured_metadata_size}' bytes. Please see "
                    "`limits_config.max_structured_metadata_size` or contact your Loki "
                    "administrator to increase it.",
                )
            count = len(entry.metadata)
            if self.max_structured_metadata_entries and count > self.max_structured_metadata_entries:
                return (
                    "structured_metadata_too_many",
                    f"stream '{stream}' has too many structured metadata labels: '{count}', "
                    f"limit: '{self.max_structured_metadata_entries}'. Please see "
                    "`limits_config.max_structured_metadata_entries_count` or contact your "
                    "Loki administrator to increase it.",
                )
        return None

    def _reject(
        self, reason: str, message: str, stream: str, entry: RawEntry, tenant: str | None
    ) -> None:
        self.rejected_by_reason[reason] += 1
        self.rejected_entries.append(
            Rejected(reason, message, stream, entry.ts_ns, entry.line, tenant)
        )

    def _ingest(self, streams: list[RawStream], rec: RequestRecord) -> web.Response:
        tenant = rec.tenant
        if not streams:
            # Loki 3.x refuses a push without streams before any validation.
            raise _BadRequest("error at least one valid stream is required for ingestion", 422)

        if not self.allow_structured_metadata:
            offending = [s for s in streams if any(e.metadata for e in s.entries)]
            if offending:
                # Whole push refused (stricter than Loki, see module docstring).
                messages = [
                    f"stream '{s.labels}' includes structured metadata, but this feature is "
                    "disallowed. Please see `limits_config.allow_structured_metadata` or "
                    "contact your Loki administrator to enable it."
                    for s in offending
                ]
                for s in streams:
                    for e in s.entries:
                        self._reject("disallowed_structured_metadata", messages[0], s.labels, e, tenant)
                rec.rejected = sum(len(s.entries) for s in streams)
                raise _BadRequest("structured metadata is disabled: " + _grouped_errors(messages))

        now_ns = time.time_ns()
        errors: list[str] = []
        valid: list[tuple[dict[str, str], str, list[RawEntry]]] = []  # per stream, in push order
        for stream in streams:
            if not stream.entries:
                continue  # Loki skips empty streams before looking at labels
            try:
                labels = self._stream_labels(stream)
            except _InvalidStream as exc:
                errors.append(str(exc))
                for e in stream.entries:
                    self._reject(exc.reason, str(exc), stream.labels, e, tenant)
                rec.rejected += len(stream.entries)
                continue
            canonical = format_labels(labels)
            ok: list[RawEntry] = []
            for e in stream.entries:
                problem = self._validate_entry(canonical, e, now_ns)
                if problem is not None:
                    errors.append(problem[1])
                    self._reject(problem[0], problem[1], canonical, e, tenant)
                    rec.rejected += 1
                    continue
                ok.append(e)
            valid.append((labels, canonical, ok))

        # Distributor (validator.ShouldBlockIngestion): a blocked tenant's streams are not stored;
        # its status code answers unless a validation error (400) takes precedence. 200: silent.
        if self.block_ingestion_until and time.time() < self.block_ingestion_until:
            for _labels, canonical, ok in valid:
                for e in ok:
                    self._reject("blocked_ingestion", "blocked", canonical, e, tenant)
                rec.rejected += len(ok)
            self.counters["blocked"] += 1
            if errors:
                return _text_response(400, _grouped_errors(errors))
            if self.block_ingestion_status_code == 200:
                return web.Response(status=204)
            until = datetime.fromtimestamp(int(self.block_ingestion_until), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return _text_response(self.block_ingestion_status_code,
                                  f"ingestion blocked for user {tenant or 'fake'} until '{until}' with status code "
                                  f"'{self.block_ingestion_status_code}'")

        # Distributor: the tenant's ingestion rate limit covers the whole push; nothing is stored.
        if self.tenant_rate_limit is not None:
            lines = sum(len(ok) for _, _, ok in valid)
            size = sum(e.line_size for _, _, ok in valid for e in ok)
            bucket = self._tenant_buckets.setdefault(tenant, TokenBucket(*self.tenant_rate_limit))
            if lines and not bucket.allow(size):
                for _labels, canonical, ok in valid:
                    for e in ok:
                        self._reject("rate_limited", "tenant rate limit", canonical, e, tenant)
                rec.rejected += lines
                self.counters["tenant_rate_limited"] += 1
                return _text_response(429, tenant_rate_limit_body(tenant or "fake", int(self.tenant_rate_limit[0]), lines, size))

        # Ingester (instance.Push): streams one by one; the error returned is the LAST stream's
        # result only, so an earlier stream's per-stream 429 is hidden when a later stream is fine.
        accepted: list[Received] = []
        ingester_error: str | None = None
        for labels, canonical, ok in valid:
            shown = format_labels({**labels, "__stream_shard__": "0"}) if self.shard_label else canonical
            if canonical not in self._active_streams:
                if self.max_streams and len(self._active_streams) >= self.max_streams:
                    for e in ok:
                        self._reject("stream_limit", "max streams", canonical, e, tenant)
                    rec.rejected += len(ok)
                    ingester_error = stream_limit_body(shown, tenant or "fake")
                    continue
                self._active_streams.add(canonical)
            failed: list[RawEntry] = []
            limited = self.stream_rate_limit is not None and (
                self.stream_rate_limit_match is None
                or all(labels.get(k) == v for k, v in self.stream_rate_limit_match.items()))
            bucket = self._stream_buckets.setdefault(canonical, TokenBucket(*self.stream_rate_limit)) if limited else None
            if bucket is not None and self.shard_streams and ok:
                # rateLimitWholeStream: one AllowN for the stream's valid bytes; over it, all refused.
                if not bucket.allow(sum(e.line_size + _metadata_size(e) for e in ok)):
                    failed = list(ok)
                    for e in ok:
                        self._reject("per_stream_rate_limit", "per stream rate limit", canonical, e, tenant)
            for e in ([] if failed else ok):
                if bucket is not None and not self.shard_streams and not bucket.allow(e.line_size + _metadata_size(e)):
                    failed.append(e)
                    self._reject("per_stream_rate_limit", "per stream rate limit", canonical, e, tenant)
                    continue
                accepted.append(Received(dict(labels), e.ts_ns, e.line, dict(e.metadata), tenant, rec.received_at))
            rec.rejected += len(failed)
            ingester_error = (stream_rate_limit_body(tenant or "fake", shown, failed, len(ok), int(self.stream_rate_limit[0]))
                              if failed and self.stream_rate_limit else None)

        self.received.extend(accepted)
        rec.accepted = len(accepted)
        self.counters["accepted_entries"] += len(accepted)
        self.counters["rejected_entries"] += rec.rejected
        if ingester_error is not None:
            self.counters["stream_throttled"] += 1
            return _text_response(429, ingester_error)
        if errors:
            return _text_response(400, _grouped_errors(errors))
        return web.Response(status=204)


class TokenBucket:
    """golang.org/x/time/rate's Limiter.AllowN, as Loki's limiters use it: `rate` bytes/s, `burst`
    (on `clock`: the real one here, a fake one in the sink's tests)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.clock = clock
        self.last = clock()

    def allow(self, n: float) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if n > self.tokens:
            return False
        self.tokens -= n
        return True


def _metadata_size(entry: RawEntry) -> int:
    return sum(len(k) + len(v) for k, v in entry.metadata)


def go_time_string(ts_ns: int) -> str:
    """Go's time.Time.String() in UTC: `2026-11-23 17:55:21.123456789 +0000 UTC`."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    text = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{text}{'.' + fraction if fraction else ''} +0000 UTC"


def datasize(n: int) -> str:
    """github.com/c2h5oh/datasize's String() (Loki's flagext.ByteSize): the largest exact unit."""
    for unit, size in (("EB", 1 << 60), ("PB", 1 << 50), ("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def tenant_rate_limit_body(tenant: str, limit: int, lines: int, size: int) -> str:
    """The distributor's 429 (validation.RateLimitedErrorMsg)."""
    return (f"Ingestion rate limit exceeded for user {tenant} (limit: {limit} bytes/sec) while attempting to ingest "
            f"'{lines}' lines totaling '{size}' bytes, reduce log volume or contact your Loki administrator to see "
            "if the limit can be increased")


def stream_limit_body(labels: str, tenant: str) -> str:
    """The ingester's 429 when a new stream would pass max_global_streams_per_user (StreamLimitErrorMsg)."""
    return (f"Maximum active stream limit exceeded when trying to create stream {labels}, reduce the number of active "
            "streams (reduce labels or reduce label values), or contact your Loki administrator to see if the limit "
            f"can be increased, user: '{tenant}'")


def stream_rate_limit_body(tenant: str, labels: str, failed: list[RawEntry], total: int, limit: int,
                           max_returned: int = 10) -> str:
    """The ingester's 429 for the per-stream rate limit (stream.go errorForFailedEntries): at most
    `max_returned` entries listed, then the tally naming the stream."""
    lines = [
        f"entry with timestamp {go_time_string(e.ts_ns)} ignored, reason: 'Per stream rate limit exceeded "
        f"(limit: {datasize(limit)}/sec) while attempting to ingest for stream '{labels}' totaling "
        f"{datasize(e.line_size + _metadata_size(e))}, consider splitting a stream via additional labels or contact "
        "your Loki administrator to see if the limit can be increased',\n"
        for e in failed[:max_returned]
    ]
    return "".join(lines) + f"user '{tenant}', total ignored: {len(failed)} out of {total} for stream: {labels}"


_NGINX_413 = ("<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
              "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


def _tenant_refusal(org_id: str) -> str | None:
    """dskit's tenant.TenantID as vendored in Loki 3.6.15 (resolver.go, tenant.go): the text of
    the 400 Loki's push handler answers, or None. "a|a" is one tenant; ':' is no separator there."""
    ids = org_id.split("|")
    for tenant_id in ids:
        raw = tenant_id.encode()
        for pos, char in enumerate(tenant_id):
            if not (char.isascii() and (char.isalnum() or char in "!-_.*'()")):
                at = len(tenant_id[:pos].encode())
                return f"tenant ID '{tenant_id}' contains unsupported character '{chr(raw[at])}'"  # Go: %c of a byte
        if len(raw) > 150:
            return "tenant ID is too long: max 150 characters"
        if tenant_id in (".", ".."):
            return "tenant ID is '.' or '..'"
    if len(set(ids)) > 1:
        return "multiple org IDs present"
    return None


def _decode_basic(encoded: str) -> tuple[str, str] | None:
    """Decode the credentials of a Basic Authorization header (None if malformed)."""
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _text_response(status: int, message: str) -> web.Response:
    # Go's http.Error: text/plain body terminated by a newline.
    return web.Response(status=status, text=message + "\n", charset="utf-8")


def _decode_json(body: bytes) -> list[RawStream]:
    """Decode Loki's v1 JSON push body strictly (types as Loki requires)."""
    # Go's JSON decoders replace invalid UTF-8 instead of failing.
    try:
        doc = json.loads(body.decode("utf-8", "replace"))
    except ValueError as exc:
        raise _BadRequest(f"json: {exc}") from None
    if not isinstance(doc, dict):
        raise _BadRequest("json: push request must be an object")
    raw_streams = doc.get("streams") or []
    if not isinstance(raw_streams, list):
        raise _BadRequest("json: 'streams' must be an array")
    streams: list[RawStream] = []
    for si, s in enumerate(raw_streams):
        if not isinstance(s, dict):
            raise _BadRequest(f"json: streams[{si}] must be an object")
        labels = s.get("stream") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise _BadRequest(f"json: streams[{si}].stream must map label names to strings")
        pairs = list(labels.items())
        stream = RawStream(labels=format_labels(pairs), label_pairs=pairs)
        values = s.get("values") or []
        if not isinstance(values, list):
            raise _BadRequest(f"json: streams[{si}].values must be an array")
        for vi, v in enumerate(values):
            where = f"streams[{si}].values[{vi}]"
            if not isinstance(v, list) or len(v) not in (2, 3):
                raise _BadRequest(f"json: {where} must be [ts, line] or [ts, line, metadata]")
            ts, line = v[0], v[1]
            if not isinstance(ts, str) or not _INT64_RE.match(ts):
                raise _BadRequest(f"json: {where}: timestamp must be a string of nanoseconds")
            ts_ns = int(ts)
            if not -(1 << 63) <= ts_ns < 1 << 63:
                raise _BadRequest(f"json: {where}: timestamp out of int64 range")
            if not isinstance(line, str):
                raise _BadRequest(f"json: {where}: line must be a string")
            metadata: list[tuple[str, str]] = []
            if len(v) == 3:
                meta = v[2]
                if not isinstance(meta, dict) or not all(isinstance(x, str) for x in meta.values()):
                    raise _BadRequest(f"json: {where}: structured metadata must map names to strings")
                metadata = list(meta.items())
            size = len(line.encode("utf-8", "surrogatepass"))
            stream.entries.append(RawEntry(ts_ns, line, size, metadata))
        streams.append(stream)
    return streams

