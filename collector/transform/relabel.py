"""Relabel rules in the spirit of Prometheus' `relabel_configs`, applied to one container's
labels (discovered `__meta_*` ones included) when it starts or is renamed.

Semantics follow Prometheus: the regex is anchored at both ends; `replace` joins the values of
`source_labels` with `separator`, and when the regex matches writes the expanded `replacement`
to `target_label` (an empty result removes it); `keep`/`drop` decide on the same joined value;
`labelmap` copies labels whose names match to the expanded name; `labeldrop`/`labelkeep` remove
labels by name. `$1`, `${1}` and `${name}` refer to capture groups."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Action = Literal["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]
_GROUP_REF = re.compile(r"\$(?:\{(\w+)\}|(\d+))")


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    regex: re.Pattern[str]
    source_labels: tuple[str, ...] = ()
    separator: str = ";"
    target_label: str = ""
    replacement: str = "$1"


def expand(replacement: str, match: re.Match[str]) -> str:
    def group(ref: re.Match[str]) -> str:
        key = ref.group(1) or ref.group(2)
        try:
            return match.group(int(key) if key.isdigit() else key) or ""
        except IndexError:  # no such group, by number or name: empty, as in Prometheus
            return ""

    return _GROUP_REF.sub(group, replacement)


def apply(rules: list[Rule], labels: dict[str, str]) -> tuple[dict[str, str] | None, int]:
    """The labels after the rules, or (None, index) when rule `index` dropped the container."""
    labels = dict(labels)
    for index, rule in enumerate(rules):
        if rule.action in ("replace", "keep", "drop"):
            value = rule.separator.join(labels.get(name, "") for name in rule.source_labels)
            match = rule.regex.fullmatch(value)
            if rule.action == "keep" and match is None or rule.action == "drop" and match is not None:
                return None, index
            if rule.action == "replace" and match is not None:
                target = expand(rule.target_label, match)
                result = expand(rule.replacement, match)
                if result:
                    labels[target] = result
                else:
                    labels.pop(target, None)
        elif rule.action == "labelmap":
            for name, value in list(labels.items()):
                match = rule.regex.fullmatch(name)
                if match is not None:
                    labels[expand(rule.replacement, match)] = value
        elif rule.action == "labeldrop":
            labels = {name: value for name, value in labels.items() if not rule.regex.fullmatch(name)}
        elif rule.action == "labelkeep":
            labels = {name: value for name, value in labels.items() if rule.regex.fullmatch(name)}
    return labels, -1
