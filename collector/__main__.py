"""CLI: `collector` (run), `collector check-config`, `collector status`, `collector health`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
import urllib.error

import yaml

from collector.config import ConfigError, load_config, masked, stray_env_warnings
from collector.preflight import preflight

CONFIG_HELP = "YAML config file (default: $COLLECTOR_CONFIG, else ./config.yaml if present)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collector", description="Docker log collector for Grafana Loki")
    parser.add_argument("-c", "--config", default=os.environ.get("COLLECTOR_CONFIG", ""), help=CONFIG_HELP)
    # The same option after the subcommand (`collector check-config -c x.yaml`); SUPPRESS keeps a
    # value given before the subcommand when none is given after it.
    config_after = argparse.ArgumentParser(add_help=False)
    config_after.add_argument("-c", "--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", parents=[config_after], help="collect logs (the default)")
    sub.add_parser("check-config", parents=[config_after],
                   help="run the startup checks; print the effective config (secrets masked); exit 2 on an error")
    status = sub.add_parser("status", parents=[config_after], help="ask the running collector for its per-container status")
    status.add_argument("--url", default="", help="base URL of the running collector (default: from metrics.listen)")
    status.add_argument("--json", action="store_true", help="print the raw /status JSON")
    health = sub.add_parser("health", parents=[config_after],
                            help="exit 0 if the running collector's /healthz answers 200, else 1 (the image's HEALTHCHECK)")
    health.add_argument("--url", default="", help="base URL of the running collector (default: from metrics.listen)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = args.config or ("config.yaml" if os.path.exists("config.yaml") else None)
    try:
        config = load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1 if args.command == "health" else 2  # a HEALTHCHECK knows only 0 and 1
    env_warnings = stray_env_warnings(os.environ)
    if args.command == "check-config":
        for warning in env_warnings:
            print(f"warning: {warning}", file=sys.stderr)
        found = preflight(config)
        for warning in found.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if found.errors:
            print("\n".join(found.errors), file=sys.stderr)
            return 2
        try:
            yaml.safe_dump(masked(config), sys.stdout, sort_keys=False)
            sys.stdout.flush()
        except BrokenPipeError:  # `collector check-config | head`: the reader has what it wanted
            _silence_stdout()
        return 0
    if args.command == "status":
        return _status(config.metrics.listen, args.url, args.json)
    if args.command == "health":
        return _health(config.metrics.listen, args.url)
    # The same checks as check-config, with a port in use an error here; the other warnings the run
    # reports itself, in its log.
    errors = preflight(config, running=True).errors
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    from collector.app import Collector, install_signal_handlers
    from collector.logsetup import setup_logging
    from collector.positions import PositionsLocked, lock_positions

    try:
        lock = lock_positions(config.positions.path)  # held until the process ends
    except PositionsLocked as err:
        print(err, file=sys.stderr)
        return 2
    except OSError as err:
        print(f"config error: positions.path = {config.positions.path!r}: cannot lock: {err.strerror}", file=sys.stderr)
        return 2

    setup_logging(config.log.level, config.log.format)
    for warning in env_warnings:
        logging.getLogger("collector.config").warning(warning)

    async def run() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await Collector(config, config_path=path).run(stop)

    _tune_gc()
    try:
        asyncio.run(run())
    except ConfigError as err:  # found only once running: the metrics port taken since the check above
        print(err, file=sys.stderr)
        return 2
    finally:
        os.close(lock)
    return 0


def _tune_gc() -> None:
    """The data path allocates a few objects per log line and makes no reference cycles, while the
    default collector runs every 700 allocations and its full passes walk every object the imports
    made: ~40 % of the parse time in the backlog benchmark (bench/cpu.py). What exists now (modules,
    config) lives until exit: freeze it out of every pass, and collect young objects less often."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's flush of stdout at exit cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _local_url(listen: str) -> str:
    """The base URL that reaches `metrics.listen` from the same host."""
    host, _, port = listen.rpartition(":")
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '::') else host}:{port}"


def _health(listen: str, url: str) -> int:
    import urllib.request

    if not url and not listen:
        print("metrics.listen is empty: the collector serves no /healthz; pass --url", file=sys.stderr)
        return 1
    base = url or _local_url(listen)
    try:
        with urllib.request.urlopen(f"{base.rstrip('/')}/healthz", timeout=5) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as err:  # it answers, but not 200 (a 503: the event loop is stalled)
        print(f"unhealthy: {base.rstrip('/')}/healthz answered HTTP {err.code} {err.reason}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as err:
        print(f"unhealthy: {_unreachable(base, listen, bool(url), err)}", file=sys.stderr)
        return 1


def _unreachable(base: str, listen: str, given: bool, err: Exception) -> str:
    """One line for a collector that does not answer: the address tried, why, and what to check."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    why = (reason.strerror or str(reason)) if isinstance(reason, OSError) else str(reason)
    where = ("is it running there, and is that its metrics.listen address?" if given else
             f"is the collector running on this host, serving on metrics.listen = {listen!r}? "
             "(--url asks another address)")
    return f"no collector answers at {base} ({why.lower()}): {where}"


def _status(listen: str, url: str, raw: bool) -> int:
    import json
    import urllib.request

    from collector.metrics import format_table, status_rows, throttled_rows

    given = bool(url)
    if not url and not listen:
        print("metrics.listen is empty: the collector serves no status; pass --url", file=sys.stderr)
        return 2
    base = url or _local_url(listen)
    try:
        with urllib.request.urlopen(f"{base.rstrip('/')}/status", timeout=10) as response:
            status = json.load(response)
    except urllib.error.HTTPError as err:  # something answers there, but not the collector's /status
        print(f"{base.rstrip('/')}/status answered HTTP {err.code} {err.reason}: is that the collector's metrics.listen address?",
              file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as err:
        print(_unreachable(base, listen, given, err), file=sys.stderr)
        return 1
    except ValueError:
        print(f"{base.rstrip('/')}/status did not answer with JSON: is that the collector's metrics.listen address?", file=sys.stderr)
        return 1
    if raw:
        print(json.dumps(status, indent=2))
        return 0
    print(f"host {status['host']}  docker {'connected' if status['docker_connected'] else 'DISCONNECTED'}  "
          f"sink {status['sink']}  queue {status['queue_bytes']} bytes  last push {'ok' if status['last_push_ok'] else 'FAILED'}")
    if (spool := status.get("spool")) and spool.get("enabled"):
        print(f"spool {spool['bytes']} of {spool['max_bytes']} bytes  oldest {spool['oldest_age_seconds']:.0f} s"
              + (f"  spilling: {', '.join(spool['spilling'])}" if spool["spilling"] else "")
              + (f"  PROBLEM: {'; '.join(spool['problems'])}" if spool["problems"] else ""))
    print(format_table(status_rows(status)))
    if throttled := throttled_rows(status):
        print()
        print(format_table(throttled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
