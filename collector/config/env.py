"""The `COLLECTOR_<SECTION>__<KEY>` environment overlay: variable names for every key, the tree of
overrides, and warnings for variables that look meant for us but name no key."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import msgspec

from collector.config.errors import ConfigError
from collector.config.schema import Config

ENV_PREFIX = "COLLECTOR_"

# Variables with our prefix that are not config keys (read by the CLI itself, and by
# collector/speedups.py: COLLECTOR_NO_SPEEDUPS=1 runs the pure-Python hot loops).
NOT_KEYS = frozenset({"COLLECTOR_CONFIG", "COLLECTOR_NO_SPEEDUPS"})


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


def stray_env_warnings(environ: Mapping[str, str]) -> list[str]:
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


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
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
