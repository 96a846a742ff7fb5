"""The CPU demo over seeds, with the transfer set: what the search gains, and whether it carries
over to other wordings.

    .venv/bin/python benchmarks/demo_seeds.py --seeds 0 1 2                      # the defaults
    .venv/bin/python benchmarks/demo_seeds.py --seeds 0 --label paper --set search.preset=paper

Each seed runs ``mpirun -n 2 essa-train --config launch/configs/demo-cpu.yaml`` (what ``make demo``
runs) with ``seed``, ``name`` and ``output_dir`` set, plus the ``--set`` options given. The run's
own final evaluation gives base / warm start / last mean / selected mean on the 300 test items.
Then ``essa-eval`` scores the base model, the seed's warm start and the adapter the run returns on
``benchmarks/data/arithmetic_transfer.jsonl`` (``benchmarks/make_transfer_set.py``: the same
arithmetic in hand-written wordings the generator never uses), with the demo's instruction and
reward. Finished runs and evaluations are reused. Prints markdown for benchmarks/RESULTS.md and
writes ``<output>/<label>.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = ROOT / "launch/configs/demo-cpu.yaml"
TRANSFER = ROOT / "benchmarks/data/arithmetic_transfer.jsonl"


def run(cmd: list[str], log: Path) -> None:
    """Run ``cmd`` with its output appended to ``log``; a failure stops the benchmark."""
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}); see {log}")


def transfer_accuracy(adapter: Path | None, folder: Path, log: Path) -> float:
    """Greedy accuracy on the transfer set of the base model plus ``adapter`` (cached)."""
    summary = folder / "summary.json"
    if not summary.is_file():
        from essa.data.arithmetic import INSTRUCTION
        cmd = [str(BIN / "essa-eval"), "--config", str(CONFIG), "--datasets", str(TRANSFER),
               "--set", "task.reward=arithmetic", "--set", f"task.instruction={INSTRUCTION}",
               "--output", str(folder)]
        run(cmd + (["--adapter", str(adapter)] if adapter else []), log)
    (stats,) = json.loads(summary.read_text())["datasets"].values()
    return stats["greedy_accuracy"]


def one_seed(seed: int, label: str, output: Path, overrides: list[str]) -> dict:
    name = f"{label}-s{seed}"
    run_dir, log = output / name, output / f"{name}.log"
    sets = [a for o in [f"seed={seed}", f"name={name}", f"output_dir={output}", *overrides]
            for a in ("--set", o)]
    if not (run_dir / "summary.json").is_file():
        run([str(BIN / "mpirun"), "-n", "2", str(BIN / "essa-train"), "--config", str(CONFIG), *sets], log)
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in records if r["phase"] == "search"]
    returned = summary.get("reported", "mean")
    transfer = {"base": transfer_accuracy(None, output / "transfer-base", log),
                "start": transfer_accuracy(Path(summary["start_adapter"]), output / f"transfer-start-s{seed}", log),
                "returned": transfer_accuracy(run_dir / f"adapter_{returned}", output / f"transfer-{name}", log)}
    return {"seed": seed, "label": label, "returned": returned, "test": summary["test"]["accuracy"],
            "test_items": summary["test"]["items"], "selected": summary.get("selected"),
            "search_seconds": summary["wall_time"], "generations": len(search),
            "tokens_per_generation": summary["tokens"] / max(1, len(search)),
            "informative_share": sum(r.get("informative_prompts", 0) for r in search)
            / max(1, sum(r.get("prompts", 0) for r in search)),
            "transfer": transfer}


def markdown(results: list[dict]) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
    lines = ["| label | seed | base | warm start | last mean | returned | gain | search min | tokens/gen "
             "| informative | transfer base / start / returned |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t, tr = r["test"], r["transfer"]
        gain = t[r["returned"]] - t["start"]
        lines.append(f"| {r['label']} | {r['seed']} | {pct(t['base'])} | {pct(t['start'])} | {pct(t['mean'])} | "
                     f"{pct(t[r['returned']])} ({r['returned']}) | {100 * gain:+.1f} | "
                     f"{r['search_seconds'] / 60:.1f} | {r['tokens_per_generation']:.0f} | "
                     f"{100 * r['informative_share']:.0f}% | {pct(tr['base'])} / {pct(tr['start'])} / "
                     f"{pct(tr['returned'])} |")
    gains = [r["test"][r["returned"]] - r["test"]["start"] for r in results]
    tgains = [r["transfer"]["returned"] - r["transfer"]["start"] for r in results]
    lines += ["", f"mean test gain over the warm start: {100 * sum(gains) / len(gains):+.1f} points "
              f"({', '.join(f'{100 * g:+.1f}' for g in gains)}); on the transfer set "
              f"{100 * sum(tgains) / len(tgains):+.1f} points"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--label", default="essa")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra essa-train --set")
    ap.add_argument("--output", default=str(ROOT / "runs/demo-seeds"))
    args = ap.parse_args()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        t0 = time.time()
        results.append(one_seed(seed, args.label, output, args.sets))
        print(f"seed {seed} done in {(time.time() - t0) / 60:.1f} min", flush=True)
        (output / f"{args.label}.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
