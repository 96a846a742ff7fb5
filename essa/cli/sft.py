"""``essa-sft``: the LoRA SFT warm start of ESSA (loss on the answer tokens only).

    essa-sft --config launch/configs/demo-cpu.yaml                  # train, then evaluate
    essa-sft --config launch/configs/demo-cpu.yaml --set sft.steps=40 --no-eval
    essa-sft --config launch/configs/demo-cpu.yaml --cache          # fill the warm-start cache
    essa-sft --config launch/configs/qwen2.5-math-7b-gsm8k.yaml --dry-run   # trainer + memory plan

Trains LoRA factors (``adapter.rank``, ``adapter.alpha``, ``adapter.target_modules``) on the task's
training split with the ``sft`` section's settings and writes a standard PEFT adapter folder
(adapter_config.json, adapter_model.safetensors, sft_summary.json) to ``--output`` (default:
``<output_dir>/sft-<name>``), or with ``--cache`` to ``<output_dir>/warm-start/<key>``, the folder
``essa-train`` reuses for ``adapter.init: sft``. Then scores greedy validation accuracy of the
base model and of the adapter on ``sft.eval_examples`` items (skip with ``--no-eval``).

``--dry-run`` loads nothing: it prints the trainer, device and precision ``sft.trainer: auto``
resolves to here and the memory one step needs, checked against the GPU (or
``sft.device_memory_gib``); a plan that does not fit exits 2 and names the settings that would.
With ``--set sft.device=cuda`` a node without a GPU plans for one (bf16)::

    essa-sft --config X.yaml --dry-run --set sft.device=cuda --set sft.device_memory_gib=80
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
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved trainer and the memory estimate, train nothing; "
                        "exit 2 when the estimate exceeds the device's memory")
    return parser


def dry_run(config) -> int:
    """Print the plan of ``config``'s warm start; 0 when it fits (or cannot be checked), else 2."""
    from essa.models import resolve_model_path
    from essa.sft import warm_start_dir
    from essa.sft.setup import memory_plan, resolve_setup

    from essa.models.dtype import Device, probe_device

    sft = config.sft
    device, planned = probe_device(sft.device), ""
    if sft.device.startswith("cuda") and device.kind != "cuda":
        # planning a GPU job from a login node: resolve as a bf16 GPU would
        device, planned = Device("cuda", "GPU", cuda_bf16=True), " (planned: this node has no GPU)"
    setup = resolve_setup(sft, device)
    model_path = resolve_model_path(config.model.path)
    print(f"essa-sft dry run: {model_path}")
    print(f"  {setup.describe()}{planned}")
    print(f"  {sft.steps} steps of {sft.batch_size} examples (<= {sft.max_length} tokens each), "
          f"LoRA rank {config.adapter.rank} on {', '.join(config.adapter.target_modules)}")
    print(f"  warm-start cache: {warm_start_dir(config)}")
    plan = memory_plan(config, setup, model_path)
    print("\n".join(plan.lines()))
    return 2 if plan.fits is False else 0


def main(argv: list[str] | None = None) -> int:
    """Train (or reuse, with --cache), evaluate, print a summary; exit 0, or 2 on a config error."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)

    from essa.sft import ensure_warm_start, read_summary, train_sft, warm_start_dir
    from essa.sft.cache import is_complete
    from essa.sft.publish import SUMMARY_FILE

    try:
        if args.dry_run:
            return dry_run(config)
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
    if summary.get("setup"):
        lines.insert(1, summary["setup"])
    ev = summary.get("eval")
    if ev:
        lines.append(f"validation accuracy ({ev['items']} items, greedy, reward {ev['reward']}, "
                     f"{ev['backend']}): base {100 * ev['base_accuracy']:.1f}% -> "
                     f"sft {100 * ev['sft_accuracy']:.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
