"""What the collector says about itself when it starts: one line with its settings, then one line
with the containers found and how each is read, so an operator sees the setup without a scrape."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from typing import Any

from collector.config import Config
from collector.secrets import masked_url

log = logging.getLogger(__name__)

MAX_LISTED = 50  # containers named one by one in the startup line; the rest are counted
STARTUP_REPORT_WAIT = 30.0  # seconds the startup report waits for the first routes to be decided


def sink_text(config: Config) -> str:
    loki = config.loki
    if not loki.url:
        return "stdout (loki.url is empty)"
    auth = ("basic auth" if loki.username else "bearer token" if (loki.bearer_token or loki.bearer_token_file) else "no auth")
    tenant = f", tenant {loki.tenant}" if loki.tenant else ""
    return f"loki {masked_url(loki.url)} ({loki.encoding}, {auth}{tenant})"


def settings_facts(config: Config, config_path: str | None, own_id: str | None, files_usable: bool,
                   files_problem: str) -> dict[str, Any]:
    return {
        "config_file": os.path.abspath(config_path) if config_path else "none (defaults and COLLECTOR_* variables)",
        "sink": sink_text(config),
        "containers_dir": config.docker.containers_dir,
        "containers_dir_readable": files_usable,
        **({"containers_dir_problem": files_problem} if files_problem else {}),
        "sources_mode": config.sources.mode,
        "docker_host": config.docker.host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
        "positions": config.positions.path,
        "metrics": config.metrics.listen or "off",
        "own_container": own_id[:12] if own_id else "none detected (not running in a container?)",
    }


def routes_facts(routes: Iterable[tuple[str, str, str]]) -> dict[str, Any]:
    """`routes`: (container name, mode, reason) of each container found at startup."""
    routes = sorted(routes)
    by_mode = Counter(mode for _, mode, _ in routes)
    listed = [f"{name}: {mode}" + (f" ({reason})" if reason else "") for name, mode, reason in routes[:MAX_LISTED]]
    if len(routes) > MAX_LISTED:
        listed.append(f"... and {len(routes) - MAX_LISTED} more (collector status lists all)")
    return {"containers": len(routes), "by_mode": dict(sorted(by_mode.items())), "read_as": listed}


async def report_routes(resolving: Collection[asyncio.Task[None]], routes: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
    """Log the containers found at startup and how each is read, once their routes are known
    (or after STARTUP_REPORT_WAIT). `routes`: see routes_facts."""
    if resolving:
        await asyncio.wait(resolving, timeout=STARTUP_REPORT_WAIT)
    try:
        log.info("containers found", extra=routes_facts(routes()))
    except Exception:  # noqa: BLE001 - a report is not worth the process
        log.exception("startup report failed")
