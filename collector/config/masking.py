"""The effective config as plain data with its secrets masked (for `--print-config` and logs)."""

from __future__ import annotations

from typing import Any

import msgspec

from collector.config.schema import Config
from collector.config.units import encode_hook
from collector.secrets import MASK, masked_headers, masked_url

SECRET_KEYS = frozenset({"password", "bearer_token"})


def masked(config: Config) -> dict[str, Any]:
    """The effective config as plain data, with secrets replaced by ***."""

    def mask(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (MASK if k in SECRET_KEYS and v else mask(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [mask(v) for v in node]
        return node

    shown: dict[str, Any] = mask(msgspec.to_builtins(config, enc_hook=encode_hook))
    shown["loki"]["url"] = masked_url(config.loki.url)
    shown["loki"]["headers"] = masked_headers(config.loki.headers)  # e.g. Authorization
    return shown
