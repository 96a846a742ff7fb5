"""Time turning one candidate vector into a PEFT adapter folder (materialize + write).

A synthetic rank-r q/k/v/o adapter with SmolLM2-135M shapes (30 layers, hidden 576, 9 heads,
3 kv heads, head_dim 64: q/o 576x576, k/v 192x576) is built in memory; no model is needed.
Baselines in the same run: plain `safetensors.torch.save_file` of the same tensors, and a naive
per-module materialize (float64 U diag(s) Vᵀ per factor) followed by that save.

    PYTHONPATH=. .venv/bin/python benchmarks/adapter_materialize.py            # defaults below
    PYTHONPATH=. .venv/bin/python benchmarks/adapter_materialize.py --rank 32 --reps 100
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from essa.adapters import SvdSpace, peft_tensors, write_adapter
from essa.adapters.init import lora_config
from essa.engines.lora_weights import module_deltas

# SmolLM2-135M attention projections: (out_features, in_features).
SHAPES = {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576)}


@dataclass
class Args:
    rank: int = 8  # LoRA rank
    layers: int = 30  # decoder layers
    alpha_frac: float = 1.0  # share of singular values searched
    reps: int = 50  # timed repetitions per measurement (after 3 warm-up calls)
    dir: str = "/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()  # where to write
    threads: int = 0  # torch intra-op threads (0: torch's default)


def parse() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in vars(Args()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return Args(**vars(parser.parse_args()))


def synthetic_adapter(folder: Path, rank: int, layers: int) -> Path:
    """Gaussian factors with the SmolLM2 shapes, written as a PEFT folder."""
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(layers):
        for kind, (out, inp) in SHAPES.items():
            name = f"base_model.model.model.layers.{layer}.self_attn.{kind}"
            tensors[f"{name}.lora_A.weight"] = torch.randn(rank, inp, generator=gen) * 0.02
            tensors[f"{name}.lora_B.weight"] = torch.randn(out, rank, generator=gen) * 0.02
    return write_adapter(folder, tensors, lora_config(rank, 2 * rank, list(SHAPES)))


def timed(fn, reps: int) -> float:
    """Median wall time of fn() in milliseconds, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def naive_materialize(space: SvdSpace, x: np.ndarray) -> dict[str, torch.Tensor]:
    """One module at a time, float64 SVD recomputed: what a first implementation would do."""
    out = {}
    for sl in space.layout:
        factor = space.adapter.candidate.factors[sl.module]["AB".index(sl.factor)]
        u, s, vt = torch.linalg.svd(factor.double(), full_matrices=False)
        s = s.clone()
        s[: space.k] = torch.from_numpy(x[sl.start : sl.stop])
        out[sl.module.key(sl.factor)] = ((u * s) @ vt).float()
    return out


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        folder = synthetic_adapter(tmp / "source", args.rank, args.layers)
        space = SvdSpace.from_folder(folder, args.alpha_frac)
        build_s = time.perf_counter() - start
        rng = np.random.default_rng(0)
        x = space.start_vector() * (1 + 0.1 * rng.standard_normal(space.dim))
        owned = {k: v.clone() for k, v in peft_tensors(space.candidate(x)).items()}
        nbytes = sum(v.numel() * v.element_size() for v in owned.values())
        rows = [
            ("materialize (in memory)", timed(lambda: space.candidate(x), args.reps)),
            ("materialize + write folder, f32", timed(
                lambda: space.write_candidate(x, tmp / "cand"), args.reps)),
            ("materialize + write folder, bf16", timed(
                lambda: space.write_candidate(x, tmp / "cand16", torch.bfloat16), args.reps)),
            ("baseline: safetensors save_file only", timed(
                lambda: save_file(owned, str(tmp / "plain.safetensors")), args.reps)),
            ("baseline: naive materialize + save_file", timed(
                lambda: save_file(naive_materialize(space, x), str(tmp / "naive.safetensors")),
                max(5, args.reps // 5))),
            ("module_deltas (merged mode, in memory)", timed(
                lambda: module_deltas(space.candidate(x)), args.reps)),
        ]
    print(f"{space.summary}; rank {args.rank}, {len(space.adapter.modules)} modules, "
          f"{nbytes / 2**20:.2f} MiB float32, written to {args.dir}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"build space (write source + read + SVD of every factor): {build_s * 1e3:.0f} ms")
    for label, ms in rows:
        print(f"  {label:<42s} {ms:8.2f} ms (median of reps)")


if __name__ == "__main__":
    main()
