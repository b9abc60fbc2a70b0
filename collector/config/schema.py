"""Configuration: YAML file, then `COLLECTOR_<SECTION>__<KEY>` env overrides, then validation.

Every error names the key and the bad value (ConfigError); the CLI turns it into exit code 2.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from collector.secrets import MASK, masked_headers, masked_url, url_has_credentials
from collector.transform.patterns import compile_pattern

ENV_PREFIX = "COLLECTOR_"
SECRET_KEYS = frozenset({"password", "bearer_token"})


class ConfigError(Exception):
    """A config value is wrong; the message names the key and the value."""


class Duration(float):
    """Seconds; written as a number of seconds or with a unit: 200ms, 5s, 1m, 1h, 7d."""


class ByteSize(int):
    """Bytes; written as a number or with a unit: 512KiB, 16MiB, 1MB, 1GiB."""


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> Duration:
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _NUMBER_UNIT.match(str(value))
        unit = match.group(2).lower() if match else None
        if not match or (unit or "s") not in _DURATION_UNITS:
            raise ValueError(f"not a duration (use e.g. 200ms, 5s, 1h): {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[unit or "s"]
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    return Duration(seconds)


def parse_size(value: object) -> ByteSize:
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _NUMBER_UNIT.match(str(value))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _SIZE_UNITS:
            raise ValueError(f"not a size (use e.g. 512KiB, 16MiB): {value!r}")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 0:
        raise ValueError(f"size must not be negative: {value!r}")
    return ByteSize(size)


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Duration:
        return parse_duration(value)
    if kind is ByteSize:
        return parse_size(value)
    raise NotImplementedError(kind)


def _enc_hook(value: Any) -> Any:
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    raise NotImplementedError(type(value))


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
    max_bytes: ByteSize = ByteSize(4 * 1024 * 1024)

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
    batch_max_bytes: ByteSize = ByteSize(1024 * 1024)
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
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)


# Variables with our prefix that are not config keys (read by the CLI itself).
NOT_KEYS = frozenset({"COLLECTOR_CONFIG"})


def env_names(section: type[msgspec.Struct] | None = None, path: tuple[str, ...] = ()) -> list[str]:
    """Every key's variable name: COLLECTOR_LOKI__URL, COLLECTOR_LOKI__TLS__CA_FILE, ..."""
    names = []
    for info in msgspec.structs.fields(section or Config):
        here = (*path, info.name.upper())
        if isinstance(info.type, type) and issubclass(info.type, msgspec.Struct):
            names += env_names(info.type, here)
        else:
            names.append(ENV_PREFIX + "__".join(here))
    return names


def stray_env_warnings(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """A variable that looks meant for the collector but names no key (one underscore, lower case):
    ignored, so say so, with the closest key; else logs quietly go somewhere else."""
    known = env_names()
    warnings = []
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX) or name in NOT_KEYS:
            continue
        if name.startswith(ENV_PREFIX) and "__" in name:
            continue  # a key path: an unknown one is an error when the config is validated
        # Compared without the prefix: every name shares it, which would make anything look close.
        rest = {known_name[len(ENV_PREFIX):]: known_name for known_name in [*known, *NOT_KEYS]}
        closest = difflib.get_close_matches(name[len(ENV_PREFIX):].upper(), rest, n=1, cutoff=0.6)
        hint = f"did you mean {rest[closest[0]]}?" if closest else "keys look like COLLECTOR_LOKI__URL (section, two underscores, key)"
        warnings.append(f"env {name} names no config key and is ignored; {hint}")
    return warnings


def _env_overrides(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    """COLLECTOR_LOKI__URL=... -> {"loki": {"url": ...}}; values parse as YAML (so JSON lists/maps work)."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if any(not part for part in path):
            raise ConfigError(f"config error: env {name}: empty key part (keys look like COLLECTOR_LOKI__URL)")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config error: env {name}: conflicts with another override")
        # Lists and maps are JSON; everything else stays text and is coerced to the key's type.
        value: Any = raw
        if raw.lstrip().startswith(("[", "{")):
            try:
                value = msgspec.json.decode(raw)
            except msgspec.DecodeError as err:
                raise ConfigError(f"config error: env {name} = {raw!r}: not valid JSON: {err}") from None
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _steps(dotted: str) -> list[str | int]:
    """'loki.structured_metadata[1]' -> ['loki', 'structured_metadata', 1] (msgspec's path format)."""
    return [int(step[1:-1]) if step.startswith("[") else step for step in re.findall(r"\[\d+\]|[^.\[\]]+", dotted)]


def _lookup(tree: Any, dotted: str) -> Any:
    node = tree
    for step in _steps(dotted):
        if isinstance(step, int) and isinstance(node, list) and step < len(node):
            node = node[step]
        elif isinstance(step, str) and isinstance(node, dict) and step in node:
            node = node[step]
        else:
            return None
    return node


def _key_type(dotted: str) -> Any:
    """The declared type of a key (Literal[...], bool, a section, ...); None if there is no such key."""
    kind: Any = Config
    for step in _steps(dotted):
        if isinstance(step, int) and typing.get_origin(kind) is list:
            kind = typing.get_args(kind)[0]
        elif isinstance(step, str) and isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            kind = next((f.type for f in msgspec.structs.fields(kind) if f.name == step), None)
        elif isinstance(step, str) and typing.get_origin(kind) is dict:
            kind = typing.get_args(kind)[1]
        else:
            return None
    return kind


def _explain(message: str, merged: dict[str, Any]) -> str:
    """msgspec's ValidationError text -> 'config error: <key> = <value>: <why>'. The one place that
    reads msgspec's wording: tests/test_config.py has a case per message shape, so an upgrade that
    rewords one fails a test, not a user."""
    where = re.search(r" - at `\$\.?([^`]*)`$", message)
    dotted = where.group(1) if where else ""
    reason = message[: where.start()] if where else message
    if re.match(r"^[\w.\[\]-]+ = ", reason):
        # A check in a section's __post_init__ already named its key and value.
        return f"config error: {dotted}.{reason}" if dotted else f"config error: {reason}"
    unknown = re.match(r"^Object contains unknown field `([^`]*)`", reason)
    if unknown:
        dotted = f"{dotted}.{unknown.group(1)}" if dotted else unknown.group(1)
        # Compared as whole paths, so loki.tls_ca_file finds loki.tls.ca_file.
        keys = [name[len(ENV_PREFIX):].lower().replace("__", ".") for name in env_names()]
        closest = difflib.get_close_matches(dotted, keys, n=1, cutoff=0.75)
        reason = f"unknown key; did you mean {closest[0]}?" if closest else "unknown key"
    else:
        kind = _key_type(dotted)
        if typing.get_origin(kind) is Literal:
            reason = f"accepted values: {', '.join(map(str, typing.get_args(kind)))}"
        elif kind is bool and (reason.startswith("Expected `bool`") or not where):
            reason = "accepted values: true, false (or 1, 0)"
    value = _lookup(merged, dotted)
    if dotted.rsplit(".", 1)[-1] in SECRET_KEYS or dotted.startswith("loki.headers"):
        shown = MASK
    elif isinstance(value, str) and dotted == "loki.url":
        shown = repr(masked_url(value))
    else:
        shown = repr(value)
    return f"config error: {dotted} = {shown}: {reason}"


class _Loader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a config that says a thing twice is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` may be overridden on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {first_line[key] + 1})", key_node.start_mark)
                first_line[key] = key_node.start_mark.line
            except TypeError:
                pass  # an unhashable key: the base class reports it
        return super().construct_mapping(node, deep)


def _yaml_error(path: str, err: yaml.YAMLError) -> str:
    """'<file>:<line>:<column>: <problem>' rather than PyYAML's '<unicode string>' text."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        text = f"config error: {path}:{mark.line + 1}:{mark.column + 1}: {err.problem}"
        if err.context and err.context_mark is not None:
            text += f" ({err.context} at line {err.context_mark.line + 1})"
        return text
    return f"config error: {path} is not valid YAML: {err}"


def _read_secret_file(path: str, key: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as err:
        raise ConfigError(f"config error: loki.{key} = {path!r}: cannot read: {err.strerror}") from None


def load_config(path: str | None, environ: dict[str, str] | os._Environ[str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    raw: Any = {}
    if path:
        try:
            raw = yaml.load(Path(path).read_text(), Loader=_Loader) or {}
        except OSError as err:
            raise ConfigError(f"config error: cannot read {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(_yaml_error(path, err)) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config error: {path} must hold a mapping at the top, got {type(raw).__name__}")
    merged = _merge(raw, _env_overrides(environ))
    try:
        # strict=False: env values are text, "5" must fill an int and "true" a bool.
        config = msgspec.convert(merged, Config, dec_hook=_dec_hook, strict=False)
    except msgspec.ValidationError as err:
        raise ConfigError(_explain(str(err), merged)) from None
    from collector.transform.labeling import check_label_budget  # it builds on this module's types

    check_label_budget(config)
    if config.loki.password_file:
        config.loki.password = _read_secret_file(config.loki.password_file, "password_file")
    if config.loki.bearer_token_file:
        config.loki.bearer_token = _read_secret_file(config.loki.bearer_token_file, "bearer_token_file")
    return config


def masked(config: Config) -> dict[str, Any]:
    """The effective config as plain data, with secrets replaced by ***."""

    def mask(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (MASK if k in SECRET_KEYS and v else mask(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [mask(v) for v in node]
        return node

    shown: dict[str, Any] = mask(msgspec.to_builtins(config, enc_hook=_enc_hook))
    shown["loki"]["url"] = masked_url(config.loki.url)
    shown["loki"]["headers"] = masked_headers(config.loki.headers)  # e.g. Authorization
    return shown


def start_at_seconds(config: Config) -> float | None:
    """None for 'all', 0 for 'end', else the window in seconds."""
    value = config.positions.start_at
    if value == "all":
        return None
    if value == "end":
        return 0.0
    return float(parse_duration(value))
