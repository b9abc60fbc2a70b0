"""Which containers are collected: the `collector.enable` label, opt-in or opt-out, and include /
exclude patterns on the container's name, image and compose project."""

from __future__ import annotations

import re

from collector.config import NameFilters, SelectionConfig
from collector.docker.containers import ContainerInfo
from collector.transform.patterns import compile_pattern, matches

ENABLE_LABEL = "collector.enable"
_FIELDS = ("names", "images", "compose_projects")


def _compiled(filters: NameFilters) -> list[tuple[str, str, re.Pattern[str]]]:
    return [(f"{key}[{index}] {text!r}", key, compile_pattern(text))
            for key in _FIELDS for index, text in enumerate(getattr(filters, key))]


def _values(info: ContainerInfo) -> dict[str, str]:
    return {"names": info.name, "images": info.image, "compose_projects": info.compose_project}


class Selector:
    def __init__(self, config: SelectionConfig) -> None:
        self._opt_in = config.mode == "opt_in"
        self._include = _compiled(config.include)
        self._exclude = _compiled(config.exclude)

    def excluded_by(self, info: ContainerInfo) -> str:
        """The rule that excludes this container, or "" when it is collected."""
        enable = info.labels.get(ENABLE_LABEL, "").strip().lower()
        if enable in ("false", "0", "no", "off"):
            return f"label {ENABLE_LABEL}={info.labels[ENABLE_LABEL]}"
        if self._opt_in and enable not in ("true", "1", "yes", "on"):
            return f"selection.mode opt_in (no label {ENABLE_LABEL}=true)"
        values = _values(info)
        for shown, key, pattern in self._exclude:
            if matches(pattern, values[key]):
                return f"selection.exclude.{shown}"
        if self._include and not any(matches(pattern, values[key]) for _, key, pattern in self._include):
            return "selection.include (matches none)"
        return ""
