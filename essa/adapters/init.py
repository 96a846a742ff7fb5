"""A fresh LoRA adapter for the no-warm-start ablation, with non-degenerate singular values.

PEFT's default initialisation sets lora_B = 0: every singular value of B is then 0 and its U_B is
arbitrary, so a search over singular values (a multiplicative change of a zero) is stuck. Here both
factors are Gaussian, A_ij ~ N(0, 1/in) and B_ij ~ N(0, 1/r), whose singular values are distinct
and non-zero almost surely; then both are multiplied by the same c > 0 chosen so that the adapter's
delta is a small, fixed fraction of the base weight it perturbs:

    ||scale * B A||_F = rel_norm * ||W||_F        (per module, scale = lora_alpha / r)

A small delta keeps the start close to the base model (which is what the source adapter is in the
warm-start case too); sharing c between A and B keeps their singular values on the same scale.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

from essa.adapters.compat import expected_shapes
from essa.adapters.peft_io import KEY_PREFIX, lora_scale, write_adapter

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def lora_config(rank: int, alpha: float, target_modules, base_model: str | None = None) -> dict:
    """A minimal adapter_config.json that PEFT and vLLM accept."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(rank), "lora_alpha": alpha,
            "target_modules": sorted(target_modules), "lora_dropout": 0.0, "bias": "none",
            "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
            "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
            "rank_pattern": {}, "alpha_pattern": {}, "base_model_name_or_path": base_model}


def fresh_factors(weight: torch.Tensor, rank: int, scale: float, rel_norm: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian (A (r, in), B (out, r)) with ||scale * B A||_F = rel_norm * ||W||_F."""
    out_features, in_features = weight.shape
    f64 = torch.float64
    a = torch.randn(rank, in_features, generator=generator, dtype=f64) / math.sqrt(in_features)
    b = torch.randn(out_features, rank, generator=generator, dtype=f64) / math.sqrt(rank)
    target = rel_norm * torch.linalg.matrix_norm(weight.double())
    c = torch.sqrt(target / (scale * torch.linalg.matrix_norm(b @ a)))
    return (a * c).float(), (b * c).float()


def write_fresh_adapter(model_dir: str | Path, out_dir: str | Path, rank: int = 8,
                        alpha: float = 16, target_modules=DEFAULT_TARGETS, rel_norm: float = 0.01,
                        seed: int = 0) -> Path:
    """Write a fresh PEFT LoRA folder for the HF model in `model_dir` (config.json + safetensors).

    Only the targeted weights are read (to measure ||W||). Deterministic for a given seed.
    """
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    known = expected_shapes(config)
    unknown = [t for t in target_modules if t not in known]
    if unknown:
        raise ValueError(f"{model_dir}: unknown target modules {unknown} (known: {list(known)})")
    adapter_config = lora_config(rank, alpha, target_modules, str(model_dir))
    scale = lora_scale(adapter_config)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, weight in _target_weights(model_dir, target_modules):
        a, b = fresh_factors(weight, rank, scale, rel_norm, generator)  # (r, in), (out, r)
        tensors[f"{KEY_PREFIX}{name}.lora_A.weight"] = a
        tensors[f"{KEY_PREFIX}{name}.lora_B.weight"] = b
    if not tensors:
        raise ValueError(f"{model_dir}: no weights found for target modules {list(target_modules)}")
    return write_adapter(out_dir, tensors, adapter_config)


def _target_weights(model_dir: Path, target_modules):
    """Yield (module path, weight (out, in)) for every targeted linear weight, in sorted order."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    found = {}
    for file in files:
        with safe_open(str(model_dir / file), framework="pt") as f:
            for key in f.keys():
                parts = key.split(".")
                if key.endswith(".weight") and len(parts) > 1 and parts[-2] in target_modules:
                    found[key[: -len(".weight")]] = f.get_tensor(key)
    yield from sorted(found.items())
