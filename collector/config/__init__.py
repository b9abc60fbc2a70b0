"""Configuration: YAML file, then `COLLECTOR_<SECTION>__<KEY>` env overrides, then validation.

Every error names the key and the bad value (ConfigError); the CLI turns it into exit code 2.
Other modules import from here; the modules of this package import each other directly:
  schema.py       the sections as msgspec Structs, their defaults and their own checks
  units.py        durations and sizes with units, and msgspec's hooks for them
  env.py          the COLLECTOR_<SECTION>__<KEY> overlay and warnings for stray variables
  loader.py       the YAML file, the overlay merged over it, validation into a Config
  explain.py      msgspec's validation errors -> "config error: <key> = <value>: <why>"
  labelbudget.py  Loki's label-name budget, checked before any container is seen
  masking.py      the effective config with its secrets masked
  errors.py       ConfigError
"""

from collector.config.env import ENV_PREFIX, NOT_KEYS, env_names, stray_env_warnings
from collector.config.errors import ConfigError
from collector.config.loader import load_config
from collector.config.masking import SECRET_KEYS, masked
from collector.config.schema import (
    Config,
    DockerConfig,
    LabelsConfig,
    LogConfig,
    LokiConfig,
    MetricsConfig,
    NameFilters,
    PositionsConfig,
    ProcessingConfig,
    QueueConfig,
    RateLimitConfig,
    RedactRule,
    RelabelRule,
    SelectionConfig,
    ShutdownConfig,
    SourcesConfig,
    TLSConfig,
    start_at_seconds,
)
from collector.config.units import ByteSize, Duration, decode_hook, parse_duration, parse_size

__all__ = [
    "ENV_PREFIX", "NOT_KEYS", "SECRET_KEYS", "ByteSize", "Config", "ConfigError", "DockerConfig", "Duration",
    "LabelsConfig", "LogConfig", "LokiConfig", "MetricsConfig", "NameFilters", "PositionsConfig",
    "ProcessingConfig", "QueueConfig", "RateLimitConfig", "RedactRule", "RelabelRule", "SelectionConfig",
    "ShutdownConfig", "SourcesConfig", "TLSConfig", "decode_hook", "env_names", "load_config", "masked",
    "parse_duration", "parse_size", "start_at_seconds", "stray_env_warnings",
]
