"""Arguments shared by the entry points: ``--config`` plus repeatable ``--set a.b=value``."""

from __future__ import annotations

import argparse
import sys

from essa.config import ConfigError, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="YAML", help="run config file (defaults if omitted)")
    parser.add_argument("--set", "-s", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override one config field, e.g. --set engine.max_tokens=64 (repeatable)")


def config_from_args(args: argparse.Namespace):
    """The validated config, or exit 2 with the config error's message."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
