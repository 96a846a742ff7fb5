"""The instruction-following CPU demo over seeds: IFEval accuracy of the start and of ESSA, and which
constraint types moved.

    .venv/bin/python benchmarks/ifeval_demo.py --seeds 0 1 2 --output runs/ifeval-demo
    .venv/bin/python benchmarks/ifeval_demo.py --seeds 0 --label sft-gsm8k \\
        --set adapter.init=sft --set sft.dataset=gsm8k --set sft.steps=20

Each seed runs ``essa-train --config launch/configs/demo-ifeval-cpu.yaml`` (one process; the
run's own final evaluation scores base, start and ESSA's mean on IFEval's 541 prompts, prompt-level
strict unless the config says otherwise), then ``essa-eval --datasets ifeval`` on the starting
adapter and on ``adapter_mean`` for IFEval's four numbers and each constraint type's strict
accuracy. A finished seed is not run again (its run directory is reused). Prints markdown for
benchmarks/RESULTS.md and writes ``<output>/<label>.json``.
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


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output in ``log``; seconds taken. A failure stops the benchmark."""
    t0 = time.time()
    with open(log, "a", encoding="utf-8") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}); see {log}")
    return time.time() - t0


def ifeval_numbers(adapter: Path, folder: Path, log: Path, max_tokens: int) -> dict:
    """essa-eval's IFEval numbers for base + ``adapter`` (cached in ``folder``)."""
    summary = folder / "summary.json"
    if not summary.is_file():
        run([str(BIN / "essa-eval"), "--datasets", "ifeval", "--adapter", str(adapter),
             "--max-tokens", str(max_tokens), "--output", str(folder)], log)
    return json.loads(summary.read_text())["datasets"]["ifeval"]["ifeval"]


def one_seed(seed: int, label: str, output: Path, overrides: list[str]) -> dict:
    name = f"{label}-s{seed}"
    run_root = output / label
    run_dir = run_root / name
    log = output / f"{name}.log"
    sets = [a for o in [f"seed={seed}", f"name={name}", f"output_dir={run_root}", *overrides]
            for a in ("--set", o)]
    seconds = None
    if not (run_dir / "summary.json").is_file():
        seconds = run([str(BIN / "essa-train"), "--config", str(ROOT / "launch/configs/demo-ifeval-cpu.yaml"),
                       *sets], log)
    summary = json.loads((run_dir / "summary.json").read_text())
    import yaml
    max_tokens = yaml.safe_load((run_dir / "config.yaml").read_text())["engine"]["max_tokens"]
    start = Path(summary.get("start_adapter") or run_dir / "start_adapter")
    return {"seed": seed, "run_dir": str(run_dir), "train_seconds": seconds,
            "test": summary["test"]["accuracy"], "validation": summary["validation"]["accuracy"],
            "start_ifeval": ifeval_numbers(start, output / f"{name}-eval-start", log, max_tokens),
            "mean_ifeval": ifeval_numbers(run_dir / "adapter_mean", output / f"{name}-eval-mean", log, max_tokens)}


def markdown(label: str, results: list[dict]) -> str:
    pct = lambda v: f"{100 * v:.1f}"
    lines = [f"**{label}**", "",
             "| seed | base | start | ESSA mean | gain | start P-strict/P-loose/I-strict/I-loose | ESSA P-strict/P-loose/I-strict/I-loose | train min |",
             "|---|---|---|---|---|---|---|---|"]
    four = lambda n: "/".join(pct(n[k]) for k in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose"))
    for r in results:
        t = r["test"]
        minutes = f"{r['train_seconds'] / 60:.1f}" if r["train_seconds"] else "-"
        lines.append(f"| {r['seed']} | {pct(t['base'])} | {pct(t['start'])} | {pct(t['mean'])} | "
                     f"{100 * (t['mean'] - t['start']):+.1f} | {four(r['start_ifeval'])} | "
                     f"{four(r['mean_ifeval'])} | {minutes} |")
    gains = [r["test"]["mean"] - r["test"]["start"] for r in results]
    lines += ["", f"mean gain over seeds: {100 * sum(gains) / len(gains):+.1f} points", "",
              "constraint types (strict, passed/total summed over seeds, start -> ESSA), largest moves first:", ""]
    moved = {}
    for r in results:
        for key, phase in (("start_ifeval", 0), ("mean_ifeval", 1)):
            for iid, (passed, total) in r[key]["per_instruction"].items():
                entry = moved.setdefault(iid, [0, 0, 0])
                entry[phase] += passed
                entry[2] += total if phase == 0 else 0
    rows = sorted(moved.items(), key=lambda kv: -abs(kv[1][1] - kv[1][0]))
    lines += ["| constraint | start | ESSA | total |", "|---|---|---|---|"]
    lines += [f"| {iid} | {a} | {b} | {n} |" for iid, (a, b, n) in rows if a != b]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label", default="fresh", help="names the runs and the JSON file")
    parser.add_argument("--output", default="runs/ifeval-demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override for every seed, e.g. adapter.init=sft")
    args = parser.parse_args(argv)
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        results.append(one_seed(seed, args.label, output, args.overrides))
        print(f"seed {seed}: test {results[-1]['test']}", flush=True)
    (output / f"{args.label}.json").write_text(json.dumps(results, indent=2))
    print(f"\n{time.strftime('%Y-%m-%d')}: {' '.join(sys.argv)}\n")
    print(markdown(args.label, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
