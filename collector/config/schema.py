"""The config schema: one msgspec Struct per section, its defaults, and the checks a section makes
of its own values (each names the key and the value)."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import msgspec

from collector.config.sendable import header_name_ok, sendable_header_value, tenant_problem
from collector.config.units import ByteSize, Duration, parse_duration
from collector.secrets import MASK, masked_url, url_has_credentials
from collector.transform.patterns import compile_pattern


def _require(ok: bool, key: str, value: object, why: str) -> None:
    if not ok:
        raise ValueError(f"{key} = {value!r}: {why}")


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class DockerConfig(_Section):
    # Empty: DOCKER_HOST from the environment, else the local socket (aiodocker's rules).
    host: str = ""
    # Where the collector sees Docker's containers directory (host paths are mapped onto it).
    containers_dir: str = "/var/lib/docker/containers"
    # After `die`, how long a source may go without progress (not counting waits for queue room)
    # before it is closed; what it had not read then is counted as lost.
    drain_timeout: Duration = Duration(5.0)
    reconnect_max_backoff: Duration = Duration(10.0)
    # Re-list containers this often: a safety net against an event stream that died silently.
    relist_interval: Duration = Duration(60.0)
    # The collector's own container id, never read. Empty: detected from /proc/self.
    self_id: str = ""

    def __post_init__(self) -> None:
        # One spelling: log paths are joined onto it and inotify watches keyed by it ("a//b/" is "a/b").
        if self.containers_dir:
            self.containers_dir = os.path.normpath(self.containers_dir)
        _require(self.drain_timeout > 0, "drain_timeout", self.drain_timeout, "must be > 0")
        _require(self.relist_interval >= 1, "relist_interval", self.relist_interval, "must be >= 1s")


class SourcesConfig(_Section):
    # auto: json-file logs from their files (the API stream if a file cannot be read), every
    # other driver through the API; stream: every container through the API.
    mode: Literal["auto", "stream"] = "auto"
    # An API log stream that delivers nothing for this long is reopened from its position: only a
    # guard against a connection that died silently (each reopen costs dockerd a re-read from `since`).
    stream_idle_timeout: Duration = Duration(3600.0)
    # One read per turn; bounded so a busy container cannot starve quiet ones.
    read_chunk_bytes: ByteSize = ByteSize(256 * 1024)
    # Safety poll for a missed inotify event; costs one fstat per idle file per interval.
    poll_interval: Duration = Duration(2.0)
    # Lines longer than this are cut to this many bytes (counted); Loki rejects > 256 KiB by default.
    max_line_bytes: ByteSize = ByteSize(256 * 1024)

    def __post_init__(self) -> None:
        _require(self.read_chunk_bytes >= 4096, "read_chunk_bytes", self.read_chunk_bytes, "must be >= 4KiB")
        _require(self.poll_interval > 0, "poll_interval", self.poll_interval, "must be > 0")
        _require(self.max_line_bytes >= 1024, "max_line_bytes", self.max_line_bytes, "must be >= 1KiB")
        _require(self.stream_idle_timeout > 0, "stream_idle_timeout", self.stream_idle_timeout, "must be > 0")


class QueueConfig(_Section):
    # 2 MiB: four pushes' worth; beyond it sources read on into the spool, so a larger queue buys
    # little and costs ~2.5x its size in RSS (4 MiB: ~4 MiB more peak RSS in a backlog).
    max_bytes: ByteSize = ByteSize(2 * 1024 * 1024)

    def __post_init__(self) -> None:
        _require(self.max_bytes >= 64 * 1024, "max_bytes", self.max_bytes, "must be >= 64KiB")


LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Optional labels from a container's metadata (off by default: each one is a label name in every stream).
MetadataLabel = Literal["image", "compose_oneoff", "swarm_service", "swarm_task", "swarm_node"]


def _check_label_name(key: str, name: str) -> None:
    _require(bool(LABEL_NAME.match(name)), key, name, "not a valid Loki label name ([a-zA-Z_][a-zA-Z0-9_]*)")


class LabelsConfig(_Section):
    # Added to every stream.
    static: dict[str, str] = msgspec.field(default_factory=dict)
    # The Docker host's name (from the engine) as label `host`.
    host: bool = True
    # Extra labels from metadata, e.g. [image, compose_oneoff, swarm_service, swarm_task, swarm_node].
    metadata: list[MetadataLabel] = msgspec.field(default_factory=list)
    # Docker label -> Loki label, e.g. {"com.example.team": "team"}.
    docker_labels: dict[str, str] = msgspec.field(default_factory=dict)
    # json-file log attributes (`--log-opt labels=... env=...`) -> Loki label; the others go to
    # structured metadata.
    attrs: dict[str, str] = msgspec.field(default_factory=dict)
    # Loki's limits (its defaults): a rule set that can exceed them is refused at startup; values
    # only known at run time are trimmed (counted, logged) rather than have Loki refuse the push.
    max_label_names: int = 15
    max_name_length: int = 1024
    max_value_length: int = 2048
    # Cardinality guard, per tenant: at most this many label sets active (a line within
    # `active_window`); beyond it the foldable labels (mapped Docker labels, labels from fields,
    # a compose one-off container's name) of a new label set become `_other` (counted). 0: off.
    max_active_streams: int = 1000
    active_window: Duration = Duration(3600.0)

    def __post_init__(self) -> None:
        for name in self.static:
            _check_label_name("static", name)
        for docker_label, name in self.docker_labels.items():
            _check_label_name(f"docker_labels.{docker_label}", name)
        for attr, name in self.attrs.items():
            _check_label_name(f"attrs.{attr}", name)
        _require(2 <= self.max_label_names <= 1000, "max_label_names", self.max_label_names, "must be 2-1000")
        _require(self.max_name_length >= 16, "max_name_length", self.max_name_length, "must be >= 16")
        _require(self.max_value_length >= 16, "max_value_length", self.max_value_length, "must be >= 16")
        for name, value in self.static.items():
            _require(len(name) <= self.max_name_length, "static", name, f"longer than max_name_length ({self.max_name_length})")
            _require(len(value.encode()) <= self.max_value_length, f"static.{name}", value,
                     f"longer than max_value_length ({self.max_value_length} bytes)")


def _check_regex(key: str, text: str, compile: Any = re.compile) -> None:
    try:
        compile(text)
    except re.error as err:
        raise ValueError(f"{key} = {text!r}: not a valid regular expression: {err}") from None


def _check_pattern(key: str, text: str) -> None:
    _check_regex(key, text, compile_pattern)


class NameFilters(_Section):
    # Globs (`web-*`) or regular expressions written /.../, matched against the whole value.
    names: list[str] = msgspec.field(default_factory=list)
    images: list[str] = msgspec.field(default_factory=list)
    compose_projects: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("names", "images", "compose_projects"):
            for index, text in enumerate(getattr(self, key)):
                _check_pattern(f"{key}[{index}]", text)

    def is_empty(self) -> bool:
        return not (self.names or self.images or self.compose_projects)


class SelectionConfig(_Section):
    # opt_out: every container unless labelled collector.enable=false; opt_in: only containers
    # labelled collector.enable=true.
    mode: Literal["opt_out", "opt_in"] = "opt_out"
    # When any include pattern is set, only containers matching one of them are collected.
    include: NameFilters = msgspec.field(default_factory=NameFilters)
    exclude: NameFilters = msgspec.field(default_factory=NameFilters)


class RelabelRule(_Section):
    action: Literal["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"] = "replace"
    source_labels: list[str] = msgspec.field(default_factory=list)
    separator: str = ";"
    target_label: str = ""
    regex: str = "(.*)"
    replacement: str = "$1"

    def __post_init__(self) -> None:
        _check_regex("regex", self.regex)
        if self.action == "replace":
            _require(bool(self.target_label), "target_label", self.target_label, "replace needs a target_label")
            if "$" not in self.target_label:
                _check_label_name("target_label", self.target_label)
        if self.action in ("keep", "drop"):
            _require(bool(self.source_labels), "source_labels", self.source_labels, f"{self.action} needs source_labels")


class RedactRule(_Section):
    regex: str
    replacement: str = "***"

    def __post_init__(self) -> None:
        _check_regex("regex", self.regex)


class RateLimitConfig(_Section):
    # Per container; 0: no limit. The excess is dropped and counted.
    lines_per_second: float = 0.0
    bytes_per_second: ByteSize = ByteSize(0)
    burst: Duration = Duration(1.0)  # seconds' worth of lines and bytes allowed at once

    def __post_init__(self) -> None:
        _require(self.lines_per_second >= 0, "lines_per_second", self.lines_per_second, "must be >= 0")
        _require(self.burst > 0, "burst", self.burst, "must be > 0")


class ProcessingConfig(_Section):
    # Regular expressions searched in each line (every container; a container adds its own with
    # the Docker labels collector.drop / collector.keep).
    drop: list[str] = msgspec.field(default_factory=list)
    keep: list[str] = msgspec.field(default_factory=list)  # when set, only matching lines are kept
    redact: list[RedactRule] = msgspec.field(default_factory=list)  # applied in order
    # Lines parsed for `fields` (collector.parse per container): none, json or logfmt.
    parse: Literal["none", "json", "logfmt"] = "none"
    fields: list[str] = msgspec.field(default_factory=list)  # into structured metadata
    # Fields sent as labels instead (low-cardinality ones only, e.g. level); parsed like `fields`.
    field_labels: list[str] = msgspec.field(default_factory=list)
    # A leading timestamp in the line replaces Docker's time: rfc3339 or a strptime format
    # (collector.timestamp_format per container); "" off. Lines where it does not parse keep Docker's.
    timestamp_format: str = ""
    rate_limit: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    # Multiline joining for every container (collector.multiline per container): a preset (java,
    # python, go) or a first-line regular expression, e.g. '^\\S' or '^\\d{4}-'; "" off.
    multiline: str = ""
    multiline_timeout: Duration = Duration(1.0)  # an open entry is emitted after this long without a continuation

    def __post_init__(self) -> None:
        for index, name in enumerate(self.field_labels):
            _check_label_name(f"field_labels[{index}]", name)
        if self.multiline and self.multiline not in ("java", "python", "go"):
            _check_regex("multiline", self.multiline)
        _require(self.multiline_timeout > 0, "multiline_timeout", self.multiline_timeout, "must be > 0")
        for key in ("drop", "keep"):
            for index, text in enumerate(getattr(self, key)):
                _check_regex(f"{key}[{index}]", text)


class TLSConfig(_Section):
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False


class LokiConfig(_Section):
    # Full push URL, e.g. http://loki:3100/loki/api/v1/push. Empty: print to stdout instead.
    url: str = ""
    tenant: str = ""
    username: str = ""
    password: str = ""
    password_file: str = ""
    bearer_token: str = ""
    bearer_token_file: str = ""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    encoding: Literal["protobuf", "json"] = "protobuf"
    # gzip applies to JSON bodies (protobuf bodies are snappy-compressed by the protocol).
    gzip: bool = False
    # 512 KiB: a push's entries, body and the two batches read back from the spool stay in memory at
    # once; 1 MiB cost ~7 MiB more peak RSS in a backlog for no CPU gain (docs/benchmarks.md).
    batch_max_bytes: ByteSize = ByteSize(512 * 1024)
    batch_max_wait: Duration = Duration(0.2)
    timeout: Duration = Duration(10.0)
    min_backoff: Duration = Duration(0.5)
    max_backoff: Duration = Duration(30.0)
    # A throttled stream that makes no progress this long (Loki refuses every paced push) is given
    # up: its entries are dropped and counted. A stream Loki takes slowly is never given up.
    limit_retry_max: Duration = Duration(300.0)
    # /ready turns false when no push has succeeded for this long (at once on 401/403/404).
    not_ready_after: Duration = Duration(30.0)
    # Tenants a container may ask for with its `collector.tenant` Docker label; any other is refused.
    tenants_allowed: list[str] = msgspec.field(default_factory=list)
    # A container asking for a tenant outside the list: skip (not collected; logged, counted) or
    # default (sent to `tenant` above, logged).
    tenant_refused: Literal["skip", "default"] = "skip"
    # Sent as Loki structured metadata (not labels): container_id, image.
    structured_metadata: list[Literal["container_id", "image"]] = msgspec.field(
        default_factory=lambda: ["container_id", "image"]
    )

    def __post_init__(self) -> None:
        if self.url:
            _require(self.url.startswith(("http://", "https://")), "url", masked_url(self.url), "must start with http:// or https://")
        _require(self.batch_max_bytes >= 1024, "batch_max_bytes", self.batch_max_bytes, "must be >= 1KiB")
        _require(self.timeout > 0, "timeout", self.timeout, "must be > 0")
        _require(self.min_backoff > 0, "min_backoff", self.min_backoff, "must be > 0")
        _require(self.max_backoff >= self.min_backoff, "max_backoff", self.max_backoff, "must be >= min_backoff")
        for key, tenant in [("tenant", self.tenant), *((f"tenants_allowed[{i}]", t) for i, t in enumerate(self.tenants_allowed))]:
            problem = tenant_problem(tenant) if tenant else None
            _require(problem is None, key, tenant, problem or "")
        for name, value in self.headers.items():
            _require(header_name_ok(name), "headers", name, "not an HTTP header name")
            _require(sendable_header_value(value), f"headers.{name}", MASK,
                     "a header value cannot hold a line break or another control character")
        _require(sendable_header_value(self.bearer_token), "bearer_token", MASK,
                 "a token cannot hold a line break or another control character")
        # RFC 7617: the user-id ends at the first colon (a gateway would read the rest as the password).
        _require(":" not in self.username, "username", self.username, "must not contain ':'")
        _require(not (self.password and self.password_file), "password_file", self.password_file, "set password or password_file, not both")
        _require(not (self.bearer_token and self.bearer_token_file), "bearer_token_file", self.bearer_token_file, "set bearer_token or bearer_token_file, not both")
        _require(not ((self.username or self.password or self.password_file) and (self.bearer_token or self.bearer_token_file)),
                 "bearer_token", MASK, "basic auth and bearer token are exclusive")
        # aiohttp refuses to send two sets of credentials (a ValueError at the first push).
        credentials = [name for name, given in (
            ("credentials in url", url_has_credentials(self.url)),
            ("username/password", bool(self.username or self.password or self.password_file)),
            ("bearer_token", bool(self.bearer_token or self.bearer_token_file)),
            ("an Authorization header", any(name.lower() == "authorization" for name in self.headers)),
        ) if given]
        _require(len(credentials) <= 1, "headers" if "an Authorization header" in credentials else "url", MASK,
                 f"{' and '.join(credentials)} are exclusive: set one way to authenticate")


class PositionsConfig(_Section):
    path: str = "/var/lib/collector/positions.json"
    sync_interval: Duration = Duration(1.0)
    # First meeting with a running container: a duration (read lines newer than that), "all" or "end".
    start_at: str = "1h"

    def __post_init__(self) -> None:
        if self.start_at not in ("all", "end"):
            try:
                parse_duration(self.start_at)
            except ValueError:
                _require(False, "start_at", self.start_at, "must be a duration (e.g. 1h), 'all' or 'end'")


class SpoolConfig(_Section):
    # Where read chunks go when the queue is full (Loki slow or down), so sources keep reading
    # while Docker rotates their logs away; read back oldest first once Loki takes them.
    enabled: bool = True
    path: str = ""  # "": a `spool` directory beside positions.path (the same volume)
    max_bytes: ByteSize = ByteSize(1024 * 1024 * 1024)
    segment_bytes: ByteSize = ByteSize(8 * 1024 * 1024)

    def __post_init__(self) -> None:
        _require(self.segment_bytes >= 64 * 1024, "segment_bytes", self.segment_bytes, "must be >= 64KiB")
        _require(self.max_bytes >= 2 * self.segment_bytes, "max_bytes", self.max_bytes, "must be >= 2 x segment_bytes")


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class MetricsConfig(_Section):
    # host:port for /metrics, /healthz, /ready, /status. Empty: no HTTP server.
    listen: str = "0.0.0.0:9180"

    def __post_init__(self) -> None:
        if self.listen:
            _, sep, port = self.listen.rpartition(":")
            _require(bool(sep) and port.isdigit() and int(port) <= 65535, "listen", self.listen,
                     "must be host:port (port 0-65535), or empty for no HTTP server")


class ShutdownConfig(_Section):
    # How long SIGTERM waits for the queue to flush before giving up.
    flush_timeout: Duration = Duration(10.0)


class Config(_Section):
    docker: DockerConfig = msgspec.field(default_factory=DockerConfig)
    sources: SourcesConfig = msgspec.field(default_factory=SourcesConfig)
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    selection: SelectionConfig = msgspec.field(default_factory=SelectionConfig)
    labels: LabelsConfig = msgspec.field(default_factory=LabelsConfig)
    # Applied in order to each container's labels when it starts (and on rename).
    relabel: list[RelabelRule] = msgspec.field(default_factory=list)
    processing: ProcessingConfig = msgspec.field(default_factory=ProcessingConfig)
    loki: LokiConfig = msgspec.field(default_factory=LokiConfig)
    positions: PositionsConfig = msgspec.field(default_factory=PositionsConfig)
    spool: SpoolConfig = msgspec.field(default_factory=SpoolConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)


def spool_directory(config: Config) -> str:
    """spool.path, or a `spool` directory beside the positions file."""
    return config.spool.path or os.path.join(os.path.dirname(config.positions.path) or ".", "spool")


def start_at_seconds(config: Config) -> float | None:
    """None for 'all', 0 for 'end', else the window in seconds."""
    value = config.positions.start_at
    if value == "all":
        return None
    if value == "end":
        return 0.0
    return float(parse_duration(value))
