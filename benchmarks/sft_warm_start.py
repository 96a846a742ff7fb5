"""SFT warm-start sweep: validation accuracy and wall time of a few SFT settings on the CPU demo.

    .venv/bin/python benchmarks/sft_warm_start.py --config launch/configs/demo-cpu.yaml \\
        --setting steps=40,learning_rate=0.001 --setting steps=80,learning_rate=0.001 \\
        --eval-examples 200 --backend transformers --json runs/sft-sweep.json

Each ``--setting`` is a comma-separated list of ``sft.*`` fields (``rank``/``alpha`` go to the
adapter section). Every setting trains a fresh adapter into ``<output_dir>/sft-sweep/<setting>``;
then one engine scores the base model and every adapter on the same validation items (greedy, the
task's reward). Prints one markdown table row per setting, for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

ADAPTER_FIELDS = ("rank", "alpha")


def parse_setting(text: str) -> dict[str, str]:
    """``"steps=40,learning_rate=0.001"`` -> ``{"steps": "40", "learning_rate": "0.001"}``."""
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit(f"--setting {text!r}: expected field=value[,field=value...]")
    return {k.strip(): v.strip() for k, v in pairs}


def setting_config(base, setting: dict[str, str]):
    """A copy of ``base`` with the setting applied (through the config loader's own checks)."""
    from essa.config import from_dict, to_dict
    from essa.config.loader import apply_override
    raw = to_dict(copy.deepcopy(base))
    for key, value in setting.items():
        section = "adapter" if key in ADAPTER_FIELDS else "sft"
        apply_override(raw, f"{section}.{key}={value}")
    config = from_dict(type(base), raw)
    config.validate()
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="launch/configs/demo-cpu.yaml")
    parser.add_argument("--setting", action="append", required=True,
                        help="sft fields to change, e.g. steps=40,learning_rate=0.001 (repeatable)")
    parser.add_argument("--eval-examples", type=int, default=200)
    parser.add_argument("--backend", default="auto", choices=["auto", "engine", "transformers"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (training and eval)")
    parser.add_argument("--json", help="write all results to this JSON file")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="any config override for all settings, e.g. engine.enforce_eager=true")
    args = parser.parse_args(argv)

    import torch

    from essa.config import load_config
    from essa.sft import train_sft
    from essa.sft.evaluate import evaluate_candidates

    torch.set_num_threads(args.threads)
    base = load_config(args.config, [f"sft.threads={args.threads}", *args.overrides])
    rows, folders = [], []
    for text in args.setting:  # train everything first: one engine then scores all adapters
        config = setting_config(base, parse_setting(text))
        folder = Path(config.output_dir) / "sft-sweep" / text.replace(",", "_").replace("=", "")
        result = train_sft(config, folder)
        folders.append(folder)
        rows.append({"setting": text, "rank": config.adapter.rank, "steps": config.sft.steps,
                     "batch_size": config.sft.batch_size, "learning_rate": config.sft.learning_rate,
                     "final_loss": round(result.final_loss, 4), "train_seconds": result.seconds})
        print(f"{text}: final loss {result.final_loss:.4f} in {result.seconds:.0f} s", flush=True)
    # The engine is built for the largest rank of the sweep (vLLM's adapter mode needs it).
    base.adapter.rank = max(r["rank"] for r in rows)
    ev = evaluate_candidates(base, [None, *folders], args.eval_examples, args.backend)
    base_acc = ev["accuracies"][0]
    for row, acc, example in zip(rows, ev["accuracies"][1:], ev["first_completions"][1:]):
        row.update(base_accuracy=base_acc, sft_accuracy=acc, items=ev["items"],
                   backend=ev["backend"], example=example)
    print(f"\nbase {100 * base_acc:.1f}% on {ev['items']} {ev['split']} items ({ev['backend']}, "
          f"{ev['seconds']} s for {len(folders) + 1} candidates)")
    print("\n| setting | final loss | train s | base | after SFT |\n|---|---|---|---|---|")
    for row in rows:
        print(markdown_row(row))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"eval": ev, "runs": rows}, indent=2))
    return 0


def markdown_row(row: dict) -> str:
    return (f"| {row['setting']} (rank {row['rank']}, batch {row['batch_size']}) | "
            f"{row['final_loss']:.3f} | {row['train_seconds']:.0f} | "
            f"{100 * row['base_accuracy']:.1f}% | {100 * row['sft_accuracy']:.1f}% |")


if __name__ == "__main__":
    raise SystemExit(main())
