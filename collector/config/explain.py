"""msgspec's ValidationError text -> 'config error: <key> = <value>: <why>', with secrets masked."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any, Literal

import msgspec

from collector.config.env import ENV_PREFIX, env_names
from collector.config.masking import SECRET_KEYS
from collector.config.schema import Config
from collector.secrets import MASK, masked_url


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


def explain_validation_error(message: str, merged: dict[str, Any]) -> str:
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
