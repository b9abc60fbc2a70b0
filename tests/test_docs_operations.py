"""docs/operations.md lists every metric the code registers, under the name Prometheus exposes,
and no page names a metric the code does not have. Logic only: no Docker, no process."""

from __future__ import annotations

import os
import re

from prometheus_client.core import CounterMetricFamily

from collector.metrics import spool_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = open(os.path.join(REPO, "collector", "metrics.py")).read()
PAGES = ("README.md", "docs/operations.md", "docs/configuration.md", "docs/design.md")


def _read(page: str) -> str:
    return open(os.path.join(REPO, page)).read()


def exposed_names() -> set[str]:
    """Every metric as /metrics names it: counters with `_total`."""
    names = {f"{name}_total" if kind == "Counter" else name
             for kind, name in re.findall(r'(Counter|Gauge)MetricFamily(?:\(|, )\s*"(collector_\w+)"', SOURCE)}
    names |= set(re.findall(r'Histogram\(\s*"(collector_\w+)"', SOURCE))
    # The spool's counters are named in a loop: ask the function itself (no spools: zeros).
    names |= {f"{m.name}_total" if isinstance(m, CounterMetricFamily) else m.name for m in spool_metrics([])}
    return names


def test_the_source_is_read_as_expected() -> None:
    names = exposed_names()
    # A few of each kind, so a change in how metrics.py declares them cannot empty the check.
    for name in ("collector_lines_read_total", "collector_sources", "collector_spool_writes_total",
                 "collector_spool_bytes", "collector_push_duration_seconds", "collector_rss_bytes"):
        assert name in names, name
    assert len(names) >= 50


def test_every_metric_is_on_the_operations_page() -> None:
    table = {row for row in re.findall(r"^\| `(collector_\w+)` \|", _read("docs/operations.md"), re.M)}
    missing = sorted(exposed_names() - table)
    assert not missing, f"metrics the code registers but docs/operations.md's table lacks: {missing}"


def test_no_page_names_a_metric_the_code_lacks() -> None:
    known = exposed_names()
    unknown = {f"{page}: {name}" for page in PAGES
               for name in re.findall(r"`(collector_[a-z_]+)", _read(page)) if name not in known}
    assert not unknown, sorted(unknown)
