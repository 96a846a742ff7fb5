"""What limits ESSA on the CPU demo: how well does a mini-batch fitness rank candidates?

Around the starting adapter (the demo's SFT warm start) draw K candidates z ~ N(0, sigma^2 I)
(relative parametrization, as essa-train) for each sigma, and score every candidate:
- on two disjoint training mini-batches A and B of B prompts (greedy accuracy and the reference
  solution's per-token log-likelihood, both from one pass: fitness kind "hybrid"), and
- on H held-out validation items (greedy accuracy: the candidate's "true" quality).

Printed per sigma: the spread of candidate accuracy on the held-out set (what the search could
gain), the mean change from the start (how sharp the landscape is), and the rank correlations
(Spearman) of batch-A accuracy and batch-A log-likelihood with the held-out accuracy and with
batch B. A fitness whose ranking does not correlate with held-out accuracy is noise to CMA-ES.

    .venv/bin/python benchmarks/demo_signal.py --config launch/configs/demo-cpu.yaml \\
        --sigmas 0.1 0.3 0.6 --candidates 12 --batch 32 --holdout 100
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation; nan when one side is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="launch/configs/demo-cpu.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 0.6])
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--holdout", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    from essa.adapters.svd_space import SvdSpace
    from essa.config import load_config
    from essa.data import build_prompts, load_task
    from essa.engines import make_engine, sampling_from_config
    from essa.fitness import score_candidates
    from essa.rewards import get_reward
    from essa.sft import ensure_warm_start

    config = load_config(args.config, args.set)
    space = SvdSpace.from_folder(ensure_warm_start(config), config.adapter.alpha_frac, "relative")
    task = load_task(config.task)
    reward = get_reward(task.reward)
    engine = make_engine(config.model, config.engine, config.adapter)
    sampling = sampling_from_config(config.engine)
    rng = np.random.default_rng(args.seed)
    train, val = task.split(config.task.train_split), task.split(config.task.validation_split)
    picked = rng.choice(len(train), 2 * args.batch, replace=False)
    batches = [[train[i] for i in picked[:args.batch]], [train[i] for i in picked[args.batch:]]]
    holdout = val[:args.holdout]

    def prompts(examples):
        return build_prompts(engine.tokenizer, examples, task.instruction, config.model.chat_template)

    print(f"search dimension d = {space.dim}; {args.candidates} candidates per sigma; batches of "
          f"{args.batch}; held-out {len(holdout)} validation items", flush=True)
    results = []
    for sigma in args.sigmas:
        t0 = time.time()
        z = np.vstack([np.zeros(space.dim), sigma * rng.standard_normal((args.candidates, space.dim))])
        cands = [space.candidate(x, f"s{sigma}-{i}") for i, x in enumerate(z)]
        on_batch = [score_candidates(engine, cands, b, prompts(b), reward, "hybrid", sampling)
                    for b in batches]
        held = score_candidates(engine, cands, holdout, prompts(holdout), reward, "accuracy", sampling)
        acc_a = np.array([c.accuracy for c in on_batch[0]])
        acc_b = np.array([c.accuracy for c in on_batch[1]])
        ll_a = np.array([c.loglik for c in on_batch[0]])
        true = np.array([c.accuracy for c in held])
        row = {"sigma": sigma, "start_holdout": true[0], "mean_holdout": float(true[1:].mean()),
               "sd_holdout": float(true[1:].std()), "best_holdout": float(true[1:].max()),
               "sd_batch_acc": float(acc_a[1:].std()),
               "rho_acc_holdout": spearman(acc_a[1:], true[1:]),
               "rho_loglik_holdout": spearman(ll_a[1:], true[1:]),
               "rho_acc_a_b": spearman(acc_a[1:], acc_b[1:]),
               "rho_loglik_a_b": spearman(ll_a[1:], [c.loglik for c in on_batch[1]][1:]),
               "seconds": round(time.time() - t0, 1)}
        results.append(row)
        print(json.dumps(row), flush=True)
    print("\n| sigma | start (held-out) | candidates mean +- sd | best | rho(acc_A, held-out) | "
          "rho(loglik_A, held-out) | rho(acc_A, acc_B) | rho(loglik_A, loglik_B) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['sigma']} | {100 * r['start_holdout']:.0f}% | {100 * r['mean_holdout']:.1f} +- "
              f"{100 * r['sd_holdout']:.1f}% | {100 * r['best_holdout']:.0f}% | {r['rho_acc_holdout']:.2f} | "
              f"{r['rho_loglik_holdout']:.2f} | {r['rho_acc_a_b']:.2f} | {r['rho_loglik_a_b']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    engine.close()


if __name__ == "__main__":
    main()
