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
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also show vLLM's INFO lines on the console (hidden by default: "
                             "a run prints hundreds of them)")


def quiet_libraries(verbose: bool) -> None:
    """vLLM logs every prefix-cache reset and engine step detail at INFO: keep its console to
    warnings unless ``verbose``. Set before vLLM is imported (it configures its logger from the
    environment at import, and again when an engine starts); loggers already made are lowered too."""
    import logging
    import os
    if verbose:
        os.environ["VLLM_LOGGING_LEVEL"] = "INFO"
        return
    os.environ["VLLM_LOGGING_LEVEL"] = "WARNING"
    vllm_logger = logging.getLogger("vllm")
    vllm_logger.setLevel(logging.WARNING)
    for handler in vllm_logger.handlers:
        handler.setLevel(logging.WARNING)


def config_from_args(args: argparse.Namespace):
    """The validated config, or exit 2 with the config error's message; also sets how loud
    the libraries are (``--verbose``)."""
    quiet_libraries(getattr(args, "verbose", False))
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
