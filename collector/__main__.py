"""CLI: `collector` (run), `collector check-config`, `collector status`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import yaml

from collector.config import ConfigError, load_config, masked


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collector", description="Docker log collector for Grafana Loki")
    parser.add_argument(
        "-c", "--config", default=os.environ.get("COLLECTOR_CONFIG", ""),
        help="YAML config file (default: $COLLECTOR_CONFIG, else ./config.yaml if present)",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="collect logs (the default)")
    sub.add_parser("check-config", help="validate and print the effective config (secrets masked)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = args.config or ("config.yaml" if os.path.exists("config.yaml") else None)
    try:
        config = load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.command == "check-config":
        yaml.safe_dump(masked(config), sys.stdout, sort_keys=False)
        return 0
    from collector.app import Collector, install_signal_handlers
    from collector.logsetup import setup_logging

    setup_logging(config.log.level, config.log.format)

    async def run() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await Collector(config).run(stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
