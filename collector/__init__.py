"""Docker log collector for Grafana Loki."""

__version__ = "0.1.0"
