"""``essa-sft``: the LoRA SFT warm start of ESSA (loss on the answer tokens only).

    essa-sft --config launch/configs/demo-cpu.yaml                  # train, then evaluate
    essa-sft --config launch/configs/demo-cpu.yaml --set sft.steps=40 --no-eval
    essa-sft --config launch/configs/demo-cpu.yaml --cache          # fill the warm-start cache

Trains LoRA factors (``adapter.rank``, ``adapter.alpha``, ``adapter.target_modules``) on the task's
training split with the ``sft`` section's settings and writes a standard PEFT adapter folder
(adapter_config.json, adapter_model.safetensors, sft_summary.json) to ``--output`` (default:
``<output_dir>/sft-<name>``), or with ``--cache`` to ``<output_dir>/warm-start/<key>``, the folder
``essa-train`` reuses for ``adapter.init: sft``. Then scores greedy validation accuracy of the
base model and of the adapter on ``sft.eval_examples`` items (skip with ``--no-eval``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from essa.cli.common import add_config_args, config_from_args
from essa.atomic import atomic_write
from essa.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essa-sft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--output", "-o", metavar="DIR",
                       help="adapter folder to write (default: <output_dir>/sft-<name>); replaced "
                       "atomically if it exists")
    where.add_argument("--cache", action="store_true",
                       help="train into the warm-start cache <output_dir>/warm-start/<key> (reused "
                       "as is when already there)")
    parser.add_argument("--no-eval", action="store_true",
                        help="skip the before/after validation accuracy")
    parser.add_argument("--eval-backend", choices=["auto", "engine", "transformers"], default="auto",
                        help="who generates for the evaluation: the config's engine, transformers, or "
                        "auto (the engine, else transformers when it cannot apply adapters)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Train (or reuse, with --cache), evaluate, print a summary; exit 0, or 2 on a config error."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)

    from essa.sft import ensure_warm_start, read_summary, train_sft, warm_start_dir
    from essa.sft.cache import is_complete
    from essa.sft.publish import SUMMARY_FILE

    try:
        if args.cache:
            config.adapter.init = "sft"
            if is_complete(warm_start_dir(config)):
                print(f"reusing the cached warm start {warm_start_dir(config)}", flush=True)
            folder = ensure_warm_start(config, progress=not args.quiet)
        else:
            folder = Path(args.output or Path(config.output_dir) / f"sft-{config.name}")
            train_sft(config, folder, progress=not args.quiet)
    except ConfigError as e:
        print(f"config error: {e}", flush=True)
        return 2
    summary = read_summary(folder)

    if not args.no_eval and config.sft.eval_examples > 0 and config.task.validation_split:
        from essa.sft.evaluate import evaluate_before_after
        print(f"evaluating {config.sft.eval_examples} {config.task.validation_split} items "
              f"(greedy, before and after) ...", flush=True)
        summary["eval"] = evaluate_before_after(config, folder, config.sft.eval_examples,
                                                backend=args.eval_backend)
        atomic_write(folder / SUMMARY_FILE, json.dumps(summary, indent=2))
    print(format_summary(folder, summary))
    return 0


def format_summary(folder: Path, summary: dict) -> str:
    """The final lines the command prints."""
    lines = [f"essa-sft: {summary['steps']} steps on {summary['examples']} examples in "
             f"{summary['seconds']:.0f} s; final loss {summary['final_loss']:.4f} "
             f"(first step {summary['losses'][0]:.4f})",
             f"adapter: {folder}"]
    ev = summary.get("eval")
    if ev:
        lines.append(f"validation accuracy ({ev['items']} items, greedy, reward {ev['reward']}, "
                     f"{ev['backend']}): base {100 * ev['base_accuracy']:.1f}% -> "
                     f"sft {100 * ev['sft_accuracy']:.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
