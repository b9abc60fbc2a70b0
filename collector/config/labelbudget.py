"""Loki's label budget checked at load time: the label names every stream can carry, counted before
any container is seen."""

from __future__ import annotations

import re

from collector.config.errors import ConfigError
from collector.config.schema import Config
from collector.transform.labelnames import DEFAULT_LABELS, SINK_LABELS


def label_budget_problem(config: Config) -> str:
    """The label names every stream can carry, counted before any container is seen: more than
    Loki accepts is a config error (labels a container brings itself are trimmed at run time)."""
    labels = config.labels
    names: dict[str, None] = dict.fromkeys([*SINK_LABELS, *DEFAULT_LABELS[:3]])
    if labels.host:
        names["host"] = None
    names.update(dict.fromkeys([*labels.static, *labels.metadata, *labels.docker_labels.values(), *labels.attrs.values()]))
    for rule in config.relabel:
        if rule.action == "replace" and "$" not in rule.target_label:
            names[rule.target_label] = None
        elif rule.action in ("labeldrop", "labelkeep"):
            pattern = re.compile(rule.regex)
            names = {name: None for name in names
                     if name in SINK_LABELS or (pattern.fullmatch(name) is None) == (rule.action == "labeldrop")}
    if len(names) > labels.max_label_names:
        return (f"config error: labels: these settings give each stream {len(names)} label names "
                f"({', '.join(names)}); Loki accepts at most labels.max_label_names = {labels.max_label_names}")
    return ""


def check_label_budget(config: Config) -> None:
    problem = label_budget_problem(config)
    if problem:
        raise ConfigError(problem)

