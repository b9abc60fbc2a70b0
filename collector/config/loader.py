"""Loading the config: the YAML file (duplicate keys refused), the env overlay merged over it, then
validation into a Config; every failure is a ConfigError naming the key and the value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from collector.config.env import env_overrides
from collector.config.errors import ConfigError
from collector.config.explain import explain_validation_error
from collector.config.labelbudget import check_label_budget
from collector.config.schema import Config
from collector.config.sendable import sendable_header_value
from collector.config.units import decode_hook


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


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


def load_config(path: str | None, environ: Mapping[str, str] | None = None) -> Config:
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
    merged = _merge(raw, env_overrides(environ))
    try:
        # strict=False: env values are text, "5" must fill an int and "true" a bool.
        config = msgspec.convert(merged, Config, dec_hook=decode_hook, strict=False)
    except msgspec.ValidationError as err:
        raise ConfigError(explain_validation_error(str(err), merged)) from None
    check_label_budget(config)
    if config.loki.password_file:
        config.loki.password = _read_secret_file(config.loki.password_file, "password_file")
    if config.loki.bearer_token_file:
        config.loki.bearer_token = _read_secret_file(config.loki.bearer_token_file, "bearer_token_file")
        if not sendable_header_value(config.loki.bearer_token):
            raise ConfigError(f"config error: loki.bearer_token_file = {config.loki.bearer_token_file!r}: "
                              "holds a line break or another control character inside the token")
    return config
