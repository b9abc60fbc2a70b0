"""docs/configuration.md and config.yaml say what the config schema says: every key, with its
real default, and no key the schema does not have. Logic only: no Docker, no process."""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Iterator
from typing import Any

import msgspec
import yaml

from collector.config.schema import Config
from collector.config.units import decode_hook

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = open(os.path.join(REPO, "docs", "configuration.md")).read()
REQUIRED = object()  # a field without a default


class Key(typing.NamedTuple):
    type: Any
    default: Any


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return REQUIRED


def _struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


def schema_keys(kind: type[msgspec.Struct] = Config, prefix: str = "") -> Iterator[tuple[str, Key]]:
    """Every leaf key as the docs spell it: `loki.tls.ca_file`, and `relabel[].action` for the
    fields of a list of rules (the list itself is a key too)."""
    for field in msgspec.structs.fields(kind):
        name = prefix + field.name
        if _struct(field.type):
            yield from schema_keys(field.type, name + ".")
            continue
        yield name, Key(field.type, _default(field))
        args = typing.get_args(field.type)
        if typing.get_origin(field.type) is list and args and _struct(args[0]):
            yield from schema_keys(args[0], name + "[].")


SCHEMA = dict(schema_keys())
SECTIONS = {field.name for field in msgspec.structs.fields(Config)}
ROW = re.compile(r"^\| `([a-z_.\[\]]+)` \| (`[^`]*`|required) \| .+ \|$", re.M)


def documented() -> dict[str, str]:
    """key -> its default cell, from every table row whose first cell is a config key."""
    rows: dict[str, str] = {}
    for line in PAGE.splitlines():
        first = re.match(r"^\| `([^`]+)`", line)
        if not first or re.split(r"[.\[]", first.group(1))[0] not in SECTIONS:
            continue  # another table (Docker labels, ...)
        row = ROW.match(line)
        assert row, f"a config row must read | `key` | `default` or required | meaning |: {line}"
        assert row.group(1) not in rows, f"documented twice: {row.group(1)}"
        rows[row.group(1)] = row.group(2)
    return rows


def test_every_schema_key_is_documented() -> None:
    missing = sorted(set(SCHEMA) - set(documented()))
    assert not missing, f"keys of collector/config/schema.py missing from docs/configuration.md: {missing}"


def test_every_documented_key_exists_in_the_schema() -> None:
    unknown = sorted(set(documented()) - set(SCHEMA))
    assert not unknown, f"docs/configuration.md documents keys the schema does not have: {unknown}"


def test_documented_defaults_are_the_schema_defaults() -> None:
    wrong = []
    for key, cell in documented().items():
        if key not in SCHEMA:
            continue  # an unknown key: the test above names it
        expected = SCHEMA[key]
        if cell == "required":
            if expected.default is not REQUIRED:
                wrong.append(f"{key}: documented as required, has default {expected.default!r}")
            continue
        text = cell.strip("`")
        # Read as the loader reads a value (YAML, units), so `5s` documents 5.0 and `1MiB` 1048576.
        value = msgspec.convert(yaml.safe_load(text), expected.type, dec_hook=decode_hook, strict=False)
        if value != expected.default:
            wrong.append(f"{key}: documented `{text}`, the schema's default is {expected.default!r}")
    assert not wrong, "\n".join(wrong)


def _yaml_keys(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for name, value in node.items():
        key = prefix + name
        if isinstance(value, dict) and key not in SCHEMA:  # a section (`loki.tls`), not a map-valued key
            yield from _yaml_keys(value, key + ".")
        else:
            yield key


def test_config_yaml_lists_exactly_the_schema_keys() -> None:
    """The shipped config.yaml says it lists every key with its default (test_config checks the values)."""
    shipped = yaml.safe_load(open(os.path.join(REPO, "config.yaml")))
    listed = set(_yaml_keys(shipped))
    top = {key for key in SCHEMA if "[]" not in key}  # rule fields are not keys of an empty list
    assert not listed - top, f"config.yaml keys the schema does not have: {sorted(listed - top)}"
    assert not top - listed, f"schema keys missing from config.yaml: {sorted(top - listed)}"
