"""Configuration: YAML file, then `COLLECTOR_<SECTION>__<KEY>` env overrides, then validation.

Every error names the key and the bad value (ConfigError); the CLI turns it into exit code 2.
Other modules import from here; the modules of this package import each other directly.
"""

from collector.config.schema import (
    ENV_PREFIX,
    NOT_KEYS,
    SECRET_KEYS,
    ByteSize,
    Config,
    ConfigError,
    DockerConfig,
    Duration,
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
    _dec_hook,
    env_names,
    load_config,
    masked,
    parse_duration,
    parse_size,
    start_at_seconds,
    stray_env_warnings,
)

__all__ = [
    "ENV_PREFIX", "NOT_KEYS", "SECRET_KEYS", "ByteSize", "Config", "ConfigError", "DockerConfig", "Duration",
    "LabelsConfig", "LogConfig", "LokiConfig", "MetricsConfig", "NameFilters", "PositionsConfig",
    "ProcessingConfig", "QueueConfig", "RateLimitConfig", "RedactRule", "RelabelRule", "SelectionConfig",
    "ShutdownConfig", "SourcesConfig", "TLSConfig", "_dec_hook", "env_names", "load_config", "masked",
    "parse_duration", "parse_size", "start_at_seconds", "stray_env_warnings",
]
