"""The one exception of config loading: ConfigError, whose message names the key and the value."""

from __future__ import annotations


class ConfigError(Exception):
    """A config value is wrong; the message names the key and the value."""
