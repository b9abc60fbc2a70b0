"""A container's profile, made once when it starts (and on rename): whether it is collected, its
Loki labels and structured metadata, and its settings from `collector.*` Docker labels.

Labels: container_name, compose_project, compose_service, host; static labels; optional metadata
labels; mapped Docker labels and log attributes; `collector.label.<name>` from the container; then
the relabel rules, which also see Promtail's `__meta_docker_*` names. Names that start with `__`
are dropped after the rules; then Loki's limits are enforced (values cut, extra names dropped, each
counted and logged by the caller), so Loki never refuses a push for them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from collector.config import Config, RelabelRule, parse_size
from collector.docker.containers import ContainerInfo
from collector.transform import relabel
from collector.transform.guard import StreamGuard
from collector.transform.labelnames import SINK_LABELS
from collector.transform.lines import LineProcessor, ProcessingStats, build_processor
from collector.transform.multiline import Joiner, continuation_matcher
from collector.transform.routing import StreamLabeler
from collector.transform.saferegex import PatternError, compile_untrusted
from collector.transform.selection import Selector

LABEL_PREFIX = "collector.label."
MODE_LABEL = "collector.mode"
MAX_LINE_LABEL = "collector.max_line_bytes"
TENANT_LABEL = "collector.tenant"
MULTILINE_LABEL = "collector.multiline"
_METADATA_SOURCES = {
    "image": lambda info: info.image,
    "compose_oneoff": lambda info: info.labels.get("com.docker.compose.oneoff", ""),
    "swarm_service": lambda info: info.labels.get("com.docker.swarm.service.name", ""),
    "swarm_task": lambda info: info.labels.get("com.docker.swarm.task.name", ""),
    "swarm_node": lambda info: info.labels.get("com.docker.swarm.node.id", ""),
}
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def sanitize(name: str) -> str:
    """Any text -> a valid Loki label name, as Prometheus' service discovery does."""
    name = _INVALID.sub("_", name)
    return f"_{name}" if not name or name[0].isdigit() else name


@dataclass(slots=True)
class Profile:
    excluded_by: str = ""  # the rule that excludes the container; "" when collected
    skip_reason: str = "excluded"  # what collector_containers_skipped_total counts it as
    labels: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)  # structured metadata (log attributes)
    mode: str = ""  # "stream" from collector.mode=stream; "" otherwise
    max_line_bytes: int | None = None
    tenant: str = ""  # from collector.tenant, allowed by loki.tenants_allowed; "": loki.tenant
    trimmed: list[str] = field(default_factory=list)  # what Loki's limits cut: counted and logged
    problems: list[str] = field(default_factory=list)  # bad collector.* label values, ignored


def compile_rules(rules: list[RelabelRule]) -> list[relabel.Rule]:
    return [relabel.Rule(rule.action, re.compile(rule.regex), tuple(rule.source_labels), rule.separator,
                         rule.target_label, rule.replacement) for rule in rules]


class Profiler:
    def __init__(self, config: Config) -> None:
        self._selector = Selector(config.selection)
        self._labels = config.labels
        self._rules = compile_rules(config.relabel)
        self._tenants_allowed = frozenset(config.loki.tenants_allowed)
        self._processing = config.processing
        self.processing_stats = ProcessingStats()
        self.guard = StreamGuard(config.labels.max_active_streams, float(config.labels.active_window))
        self._mapped = frozenset(config.labels.docker_labels.values()) | frozenset(config.labels.attrs.values())
        self._tenant_refused = config.loki.tenant_refused

    def profile(self, info: ContainerInfo, host: str) -> Profile:
        profile = Profile(excluded_by=self._selector.excluded_by(info))
        if profile.excluded_by:
            return profile
        labels, metadata = self._base_labels(info, host)
        labels.update(discovered(info))
        relabelled, dropped_by = relabel.apply(self._rules, labels)
        if relabelled is None:
            profile.excluded_by = f"relabel[{dropped_by}] ({self._rules[dropped_by].action})"
            return profile
        profile.labels = self._within_limits(relabelled, profile.trimmed)
        profile.metadata = metadata
        self._settings(info, profile)
        if profile.tenant and profile.tenant not in self._tenants_allowed:
            refused = f"tenant {profile.tenant!r} not in loki.tenants_allowed"
            if self._tenant_refused == "skip":
                profile.excluded_by, profile.skip_reason = refused, "tenant_refused"
            else:
                profile.problems.append(f"{refused}: sent to the default tenant (loki.tenant_refused: default)")
                profile.tenant = ""
        return profile

    def joiner(self, info: ContainerInfo, max_bytes: int, problems: list[str]) -> Joiner | None:
        """Multiline joining for a source of this container, or None."""
        own = MULTILINE_LABEL in info.labels  # set, even empty (off), it replaces the config's
        spec = info.labels.get(MULTILINE_LABEL, self._processing.multiline).strip()
        if not spec:
            return None
        try:
            # The container's own pattern on RE2 (linear time); the config's was checked at startup.
            continues = continuation_matcher(spec, compile_untrusted) if own else continuation_matcher(spec)
        except (re.error, PatternError) as err:
            problems.append(f"{MULTILINE_LABEL}={spec!r}: not a preset (java, python, go) and {err}; ignored")
            return None
        return Joiner(continues, max_bytes, float(self._processing.multiline_timeout))

    def labeler(self, info: ContainerInfo, tenant: str) -> StreamLabeler | None:
        """The stream each entry goes to, for a source of this container (None: guard off, no field labels)."""
        field_labels = tuple(self._processing.field_labels)
        if self.guard.max_streams <= 0 and not field_labels:
            return None
        foldable = set(self._mapped) | set(field_labels)
        foldable |= {sanitize(name[len(LABEL_PREFIX):]) for name in info.labels if name.startswith(LABEL_PREFIX)}
        if info.labels.get("com.docker.compose.oneoff", "").lower() == "true":
            foldable.add("container_name")  # `docker compose run` names grow without bound
        return StreamLabeler(self.guard, tenant, frozenset(foldable), field_labels)

    def processor(self, info: ContainerInfo, problems: list[str]) -> LineProcessor | None:
        """A new per-line processor for a source of this container (None: nothing to do per line)."""
        return build_processor(self._processing, info.labels, self.processing_stats, problems)

    def _base_labels(self, info: ContainerInfo, host: str) -> tuple[dict[str, str], dict[str, str]]:
        config = self._labels
        labels = {"container_name": info.name, "compose_project": info.compose_project,
                  "compose_service": info.compose_service}
        if config.host and host:
            labels["host"] = host
        labels.update(config.static)
        for name in config.metadata:
            labels[name] = _METADATA_SOURCES[name](info)
        for docker_label, name in config.docker_labels.items():
            labels[name] = info.labels.get(docker_label, "")
        metadata: dict[str, str] = {}
        for attr, value in info.log_attrs.items():
            if attr in config.attrs:
                labels[config.attrs[attr]] = value
            else:
                metadata[attr] = value
        for docker_label, value in info.labels.items():
            if docker_label.startswith(LABEL_PREFIX) and len(docker_label) > len(LABEL_PREFIX):
                labels[sanitize(docker_label[len(LABEL_PREFIX):])] = value
        return labels, metadata

    def _within_limits(self, labels: dict[str, str], trimmed: list[str]) -> dict[str, str]:
        config = self._labels
        kept: dict[str, str] = {}
        room = config.max_label_names - len(SINK_LABELS)
        for name, value in labels.items():
            if name.startswith("__") or not value or name in SINK_LABELS:
                continue
            if len(name) > config.max_name_length:
                trimmed.append(f"label name {name[:40]}... longer than {config.max_name_length}: dropped")
                continue
            if len(kept) >= room:
                trimmed.append(f"label {name}: more than {config.max_label_names} label names: dropped")
                continue
            raw = value.encode()
            if len(raw) > config.max_value_length:
                value = raw[: config.max_value_length].decode(errors="ignore")
                trimmed.append(f"label {name}: value longer than {config.max_value_length} bytes: cut")
            kept[name] = value
        return kept

    @staticmethod
    def _settings(info: ContainerInfo, profile: Profile) -> None:
        mode = info.labels.get(MODE_LABEL, "").strip()
        if mode in ("stream", "file", "auto"):
            profile.mode = "stream" if mode == "stream" else ""
        elif mode:
            profile.problems.append(f"{MODE_LABEL}={mode!r}: not one of file, stream, auto; ignored")
        size = info.labels.get(MAX_LINE_LABEL, "").strip()
        if size:
            try:
                profile.max_line_bytes = max(1024, int(parse_size(size)))
            except ValueError:
                profile.problems.append(f"{MAX_LINE_LABEL}={size!r}: not a size (e.g. 64KiB); ignored")
        profile.tenant = info.labels.get(TENANT_LABEL, "").strip()


def discovered(info: ContainerInfo) -> dict[str, str]:
    """Promtail's docker_sd names (so its relabel_configs carry over), plus image and log driver."""
    labels = {
        "__meta_docker_container_id": info.id,
        "__meta_docker_container_name": f"/{info.name}",
        "__meta_docker_container_image": info.image,
        "__meta_docker_container_log_driver": info.log_driver,
    }
    for name, value in info.labels.items():
        labels[f"__meta_docker_container_label_{sanitize(name)}"] = value
    return labels
