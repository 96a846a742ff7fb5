"""The paper's Table 2 in miniature: ESSA on an unquantized, an INT8 (W8A8) and an INT4 (W4A16) base.

    .venv/bin/python benchmarks/quantized_search.py search --seeds 0 --output runs/quantized
    .venv/bin/python benchmarks/quantized_search.py throughput --batch 64 --candidates 8
    .venv/bin/python benchmarks/quantized_search.py calibration --adapter WARM_START \
        --copy int8-gptq=int8:DIR --copy int4-gptq=int4:DIR ...

``search``: for each precision, the CPU demo (``mpirun -n 2 essa-train --config
launch/configs/demo-cpu.yaml --set model.quantization=P``) with the same seed and budget. The SFT
warm start is trained once on the unquantized model (shared cache in ``--output``); each run's own
final evaluation scores the base model, the warm start and ESSA's adapters on that run's base, so
one table gives base / warm start / ESSA per precision. Wall time and the peak RSS of the largest
process (the worker, which holds the engine) come from ``/usr/bin/time -v``. A finished run is
not run again.

``calibration``: the same warm start evaluated (essa-eval, 100 validation and 300 test items)
on the unquantized model and on each given copy: what round-to-nearest loses and calibration
(GPTQ, SmoothQuant) buys back.

``throughput``: one child process per engine (so each peak RSS is its own): the unquantized model
(plain generation of K x B requests, ESSA's K candidates in merged mode and in adapter mode) and
each quantized base (plain, and the K candidates in adapter mode). tok/s as ratios to plain
unquantized generation, measured in the same run.

Needs the quantized copies: ``essa prepare-model --quantize int8 --quantize int4`` (make setup).
Figures: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def peak_rss_gib(time_log: str) -> float | None:
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_log)
    return round(int(found[1]) / 2**20, 2) if found else None


def search(args) -> None:
    output = Path(args.output).absolute()
    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for precision in args.precisions:
            name = f"{precision}-s{seed}"
            run_dir = output / name
            record = output / f"{name}.json"
            if not (run_dir / "summary.json").is_file():
                sets = {"name": name, "seed": seed, "output_dir": output, "model.quantization": precision,
                        **dict(s.split("=", 1) for s in args.set)}
                cmd = ["/usr/bin/time", "-v", str(BIN / "mpirun"), "-n", "2", str(BIN / "essa-train"),
                       "--config", str(ROOT / "launch/configs/demo-cpu.yaml"),
                       *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
                print(f"[{time.strftime('%H:%M:%S')}] {name}: running", flush=True)
                t0 = time.time()
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                (output / f"{name}.log").write_text(proc.stdout + proc.stderr)
                if proc.returncode:
                    raise SystemExit(f"{name} failed ({proc.returncode}); see {output / f'{name}.log'}")
                record.write_text(json.dumps({"seconds": round(time.time() - t0, 1),
                                              "peak_rss_gib": peak_rss_gib(proc.stderr)}))
            summary = json.loads((run_dir / "summary.json").read_text())
            extra = json.loads(record.read_text()) if record.is_file() else {}
            rows.append({"precision": precision, "seed": seed, **extra,
                         "engine": summary["engines"]["1"],
                         "validation": summary["validation"]["accuracy"],
                         "test": summary["test"]["accuracy"],
                         "search_seconds": summary.get("search_seconds")})
            print(json.dumps(rows[-1]), flush=True)
    (output / "search.json").write_text(json.dumps(rows, indent=2))
    print("\n| precision | seed | validation: base / start / ESSA | test: base | start | ESSA "
          "(selected) | ESSA - start | run min | peak RSS GiB |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        v, t = r["validation"], r["test"]
        essa = t.get("selected", t["mean"])
        print(f"| {r['precision']} | {r['seed']} | {100 * v['base']:.0f} / {100 * v['start']:.0f} / "
              f"{100 * v.get('selected', v['mean']):.0f} | {100 * t['base']:.1f}% | {100 * t['start']:.1f}% | "
              f"{100 * essa:.1f}% | {100 * (essa - t['start']):+.1f} | {r.get('seconds', 0) / 60:.1f} | "
              f"{r.get('peak_rss_gib')} |")


def _greedy_accuracy(summary) -> float | None:
    """The first ``greedy_accuracy`` in an essa-eval summary.json (one dataset evaluated)."""
    if isinstance(summary, dict):
        if summary.get("greedy_accuracy") is not None:
            return summary["greedy_accuracy"]
        for value in summary.values():
            found = _greedy_accuracy(value)
            if found is not None:
                return found
    return None


def calibration(args) -> None:
    """The warm start on each copy (``--copy LABEL=SCHEME:FOLDER``, plus the unquantized model):
    essa-eval on the validation and test items, one engine each."""
    output = Path(args.output).absolute()
    copies = [("none", "none", "")] + [(label, *spec.split(":", 1)) for label, spec in
                                       (c.split("=", 1) for c in args.copy)]
    print("| base | validation (100) | test (300) |\n|---|---|---|")
    for label, scheme, folder in copies:
        scores = []
        for split, limit in (("validation", 100), ("test", 300)):
            out = output / "calibration" / f"{label}-{split}"
            if not (out / "summary.json").is_file():
                sets = [] if scheme == "none" else ["--set", f"model.quantization={scheme}",
                                                     "--set", f"model.quantized_path={folder}"]
                cmd = [str(BIN / "essa-eval"), "--config", str(ROOT / "launch/configs/demo-cpu.yaml"),
                       "--adapter", args.adapter, "--datasets", "arithmetic", "--split", split,
                       "--limit", str(limit), "--output", str(out), *sets]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                if proc.returncode:
                    raise SystemExit(f"{label} {split} failed:\n{proc.stderr[-3000:]}")
            scores.append(_greedy_accuracy(json.loads((out / "summary.json").read_text())))
        print(f"| {label} | {100 * scores[0]:.1f}% | {100 * scores[1]:.1f}% |", flush=True)


def throughput_child(args) -> None:
    """One engine in this process: tok/s of plain generation and of K candidates; peak RSS."""
    import numpy as np

    from essa.adapters.init import write_fresh_adapter
    from essa.adapters.svd_space import SvdSpace
    from essa.config import EngineConfig, ModelConfig, RunConfig
    from essa.data import build_prompts, load_task
    from essa.engines.base import SamplingSettings
    from essa.engines.vllm_engine import VLLMEngine
    from essa.models import prepare_demo_model

    model = prepare_demo_model(check=False)
    space = SvdSpace.from_folder(write_fresh_adapter(model, Path(args.tmp) / "adapter", rank=8, rel_norm=0.02))
    rng = np.random.default_rng(0)
    v0 = space.start_vector()
    cands = [space.candidate(v0 * (1 + 0.3 * rng.standard_normal(space.dim)), f"c{i}")
             for i in range(args.candidates)]
    quant = args.child
    mode = "hybrid" if quant == "none" else "adapter"
    engine = VLLMEngine(model, ModelConfig(path=str(model), quantization=quant),
                        EngineConfig(max_model_len=512, kv_cache_gib=2, enforce_eager=args.eager, mode=mode,
                                     max_loras=args.candidates))
    task = load_task(RunConfig().task)
    prompts = build_prompts(engine.tokenizer, task.split("validation")[:args.batch], task.instruction)
    sampling = SamplingSettings(max_tokens=args.max_tokens)

    def rate(run, prompts_, cands_):
        t = time.perf_counter()
        out = run.generate(prompts_, cands_, sampling)
        return sum(c[0].num_tokens for per in out for c in per) / (time.perf_counter() - t)

    plain_engine = engine.merged_mode or engine.adapter_mode
    rate(plain_engine, prompts[:4], [None])  # warm-up
    result = {"engine": quant, "describe": engine.describe(), "plain": [], "adapter": [], "merged": []}
    for _ in range(args.repeats):
        result["plain"].append(rate(plain_engine, prompts * args.candidates, [None]))
        result["adapter"].append(rate(engine.adapter_mode, prompts, cands))
        if engine.merged_mode:
            result["merged"].append(rate(engine.merged_mode, prompts, cands))
    status = Path("/proc/self/status").read_text()
    result["peak_rss_gib"] = round(int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 2**20, 2)
    print("RESULT " + json.dumps(result), flush=True)


def throughput(args) -> None:
    import statistics
    import tempfile
    results = {}
    for quant in args.precisions:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "throughput", "--child", quant, "--tmp", tmp,
                   "--batch", str(args.batch), "--candidates", str(args.candidates),
                   "--max-tokens", str(args.max_tokens), "--repeats", str(args.repeats),
                   *(["--eager"] if args.eager else [])]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{quant}: failed ({proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
                continue
            results[quant] = json.loads(line[len("RESULT "):])
            print(json.dumps(results[quant]), flush=True)
    if "none" not in results:
        raise SystemExit("the unquantized engine failed: no baseline")
    base = statistics.median(results["none"]["plain"])
    print(f"\nB = {args.batch}, K = {args.candidates}, {args.max_tokens} new tokens, "
          f"{'eager' if args.eager else 'compiled'}; plain unquantized generation {base:.0f} tok/s = 1.00\n")
    print("| base | candidates in | tok/s | vs plain unquantized | peak RSS GiB |\n|---|---|---|---|---|")
    for quant, r in results.items():
        for kind in ("plain", "merged", "adapter"):
            if r[kind]:
                med = statistics.median(r[kind])
                label = "no candidate (plain vLLM)" if kind == "plain" else f"{kind} mode"
                print(f"| {quant} | {label} | {med:.0f} | {med / base:.2f} | {r['peak_rss_gib']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="the demo run on each base (base / warm start / ESSA)")
    s.add_argument("--seeds", type=int, nargs="+", default=[0])
    s.add_argument("--precisions", nargs="+", default=["none", "int8", "int4"])
    s.add_argument("--output", default="runs/quantized")
    s.add_argument("--set", action="append", default=[], help="extra KEY=VALUE for every run")
    c = sub.add_parser("calibration", help="the warm start on each quantized copy (what calibration buys)")
    c.add_argument("--adapter", required=True, help="the warm-start adapter folder")
    c.add_argument("--copy", action="append", default=[], metavar="LABEL=SCHEME:FOLDER")
    c.add_argument("--output", default="runs/quantized")
    t = sub.add_parser("throughput", help="candidate throughput and peak RSS per engine")
    t.add_argument("--precisions", nargs="+", default=["none", "int8", "int4"])
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--candidates", type=int, default=8)
    t.add_argument("--max-tokens", type=int, default=48)
    t.add_argument("--repeats", type=int, default=2)
    t.add_argument("--eager", action="store_true")
    t.add_argument("--json")
    t.add_argument("--child", help=argparse.SUPPRESS)
    t.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.command == "search":
        search(args)
    elif args.command == "calibration":
        calibration(args)
    elif args.child:
        throughput_child(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
