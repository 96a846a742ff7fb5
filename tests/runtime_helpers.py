"""Helpers of the runtime tests: a tiny synthetic adapter and fake-engine runs of essa-train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tiny_adapter(folder: Path, layers: int = 2, rank: int = 4, width: int = 16) -> Path:
    """A PEFT LoRA folder on q/v of a made-up 2-layer model: d = layers * 2 * 2 * rank."""
    from essa.adapters.init import lora_config
    from essa.adapters.peft_io import KEY_PREFIX, write_adapter
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(layers):
        for module in ("q_proj", "v_proj"):
            name = f"model.layers.{layer}.self_attn.{module}"
            tensors[f"{KEY_PREFIX}{name}.lora_A.weight"] = torch.randn(rank, width, generator=g)
            tensors[f"{KEY_PREFIX}{name}.lora_B.weight"] = torch.randn(width, rank, generator=g)
    return write_adapter(folder, tensors, lora_config(rank, 2 * rank, ["q_proj", "v_proj"]))


def fake_args(tmp: Path, adapter: Path, *extra: str, name: str = "fake") -> list[str]:
    """essa-train arguments of a small fake-engine run (arithmetic data, no model)."""
    sets = {"name": name, "output_dir": str(tmp), "adapter.init": str(adapter),
            "adapter.target_modules": "[q_proj, v_proj]", "adapter.rank": 4,
            "runtime.evaluator": "fake", "search.popsize": 6, "search.generations": 4,
            "fitness.prompts_per_candidate": 4, "runtime.eval_every": 2, "runtime.eval_items": 10,
            "runtime.test_items": 6, "task.arithmetic.train_size": 200,
            "task.arithmetic.validation_size": 20, "task.arithmetic.test_size": 20,
            "runtime.cpu_bind": "nobind"}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    return [*args, *extra]


def launch(cmd: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
    """Start a command with this venv first on PATH (mpirun, essa-train)."""
    full = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    return subprocess.Popen(cmd, env=full, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def train_cmd(n: int | None, args: list[str]) -> list[str]:
    """essa-train alone (n None) or under ``mpirun -n n``."""
    base = [str(BIN / "essa-train"), *args]
    return base if n is None else [str(BIN / "mpirun"), "-n", str(n), *base]
