"""Read, validate and write PEFT LoRA adapter folders.

A PEFT LoRA folder holds `adapter_config.json` and `adapter_model.safetensors`, whose keys look like
`base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` (r, in_features) and
`...q_proj.lora_B.weight` (out_features, r). This module knows that layout and nothing about SVD.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
_FACTOR_SUFFIX = {"A": ".lora_A.weight", "B": ".lora_B.weight"}
_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


class AdapterError(ValueError):
    """A folder is not a LoRA adapter this package can search over; the message names the path."""


@dataclass(frozen=True)
class LoraModule:
    """One adapted linear layer: its name in the base model and the keys of its two factors."""

    name: str  # e.g. "model.layers.3.self_attn.q_proj" (base model's module path)
    layer: int | None  # decoder layer index, None for modules outside `layers.N`
    kind: str  # last path component: "q_proj", "o_proj", ...
    out_features: int
    in_features: int

    @property
    def a_key(self) -> str:
        return f"{KEY_PREFIX}{self.name}{_FACTOR_SUFFIX['A']}"

    @property
    def b_key(self) -> str:
        return f"{KEY_PREFIX}{self.name}{_FACTOR_SUFFIX['B']}"


@dataclass(frozen=True)
class LoraAdapter:
    """A validated PEFT LoRA adapter loaded from disk."""

    path: Path
    config: dict  # adapter_config.json, as read
    tensors: dict[str, torch.Tensor]  # safetensors key -> tensor, as stored
    modules: tuple[LoraModule, ...]  # sorted by (layer, name): the order of the search layout
    rank: int
    sha256: str  # of adapter_model.safetensors: identifies the frozen U/V in other processes

    @property
    def scale(self) -> float:
        """The factor PEFT and vLLM multiply B @ A by (lora_alpha / r, or / sqrt(r) for rsLoRA)."""
        return lora_scale(self.config)


def lora_scale(config: dict) -> float:
    """Scaling the loader applies to B @ A, from an adapter_config dict."""
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_adapter(path: str | Path) -> LoraAdapter:
    """Load and validate a PEFT LoRA adapter folder; raise AdapterError naming the problem."""
    path = Path(path)
    config = _read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        has_bin = (path / "adapter_model.bin").exists()
        hint = " (adapter_model.bin is not read: re-save with safetensors)" if has_bin else ""
        raise AdapterError(f"{path}: missing {WEIGHTS_FILE}{hint}")
    tensors = load_file(str(weights))
    rank = int(config["r"])
    modules = _parse_modules(path, tensors, rank)
    for module in modules:
        _check_target(path, config.get("target_modules"), module.name)
    return LoraAdapter(path, config, tensors, modules, rank, file_sha256(weights))


def _read_config(path: Path) -> dict:
    """Read adapter_config.json and reject the LoRA variants the SVD search cannot represent."""
    if not path.is_dir():
        raise AdapterError(f"{path}: not a folder")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise AdapterError(f"{path}: missing {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{config_path}: not valid JSON ({err})") from err
    if config.get("peft_type") != "LORA":
        raise AdapterError(
            f"{config_path}: peft_type is {config.get('peft_type')!r}, expected 'LORA'")
    for key in ("r", "lora_alpha"):
        if key not in config:
            raise AdapterError(f"{config_path}: missing {key!r}")
    if int(config["r"]) < 1:
        raise AdapterError(f"{config_path}: r must be >= 1, got {config['r']}")
    unsupported = [k for k in ("use_dora", "lora_bias") if config.get(k)]
    # One rank everywhere (the dimension formula) and nothing but A/B factors to search.
    unsupported += [k for k in ("rank_pattern", "alpha_pattern", "modules_to_save")
                    if config.get(k)]
    if config.get("bias", "none") != "none":
        unsupported.append("bias")
    if config.get("fan_in_fan_out"):
        unsupported.append("fan_in_fan_out")
    if unsupported:
        raise AdapterError(f"{config_path}: unsupported LoRA options set: {', '.join(unsupported)}")
    return config


def _parse_modules(path: Path, tensors: dict[str, torch.Tensor],
                   rank: int) -> tuple[LoraModule, ...]:
    """Pair lora_A / lora_B keys into modules and check their shapes against the rank."""
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, factor = _split_key(path, key)
        factors.setdefault(name, {})[factor] = tensor
    if not factors:
        raise AdapterError(f"{path / WEIGHTS_FILE}: no LoRA tensors")
    modules = []
    for name, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"{path}: module {name} has only lora_{''.join(pair)}")
        a, b = pair["A"], pair["B"]  # (r, in), (out, r)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise AdapterError(
                f"{path}: module {name}: lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} "
                f"do not match rank r={rank} (expected (r, in) and (out, r))")
        if rank > min(a.shape[1], b.shape[0]):
            raise AdapterError(f"{path}: module {name}: rank {rank} exceeds its dimensions")
        layer = _LAYER_RE.search(f".{name}.")
        modules.append(LoraModule(name, int(layer.group(1)) if layer else None,
                                  name.rsplit(".", 1)[-1], b.shape[0], a.shape[1]))
    return tuple(sorted(modules, key=lambda m: (-1 if m.layer is None else m.layer, m.name)))


def _split_key(path: Path, key: str) -> tuple[str, str]:
    """'base_model.model.X.lora_A.weight' -> ('X', 'A'); anything else is an error."""
    for factor, suffix in _FACTOR_SUFFIX.items():
        if key.startswith(KEY_PREFIX) and key.endswith(suffix):
            return key[len(KEY_PREFIX):-len(suffix)], factor
    raise AdapterError(f"{path / WEIGHTS_FILE}: unexpected tensor {key!r} (only LoRA A/B weights "
                       "are supported: no embeddings, biases, DoRA magnitudes or saved modules)")


def _check_target(path: Path, target, name: str) -> None:
    """Every module in the weights must be one the config's target_modules selects (PEFT's rule)."""
    if target is None or target == "all-linear":
        return
    if isinstance(target, str):
        ok = re.fullmatch(target, name) is not None
    else:
        ok = any(name == t or name.endswith("." + t) for t in target)
    if not ok:
        raise AdapterError(f"{path}: module {name} is not among target_modules {target!r}")


def write_config(folder: str | Path, config: dict) -> None:
    """Write adapter_config.json (atomically: readers never see half a file)."""
    _atomic_write(Path(folder) / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True).encode())


def write_adapter(folder: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Write a PEFT LoRA folder with plain safetensors; tensors are made contiguous and unshared."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors sharing storage (our materialized views do): copy each one.
    owned = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    save_file(owned, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / WEIGHTS_FILE)
    write_config(folder, config)
    return folder


def _atomic_write(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, target)
