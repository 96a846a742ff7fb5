"""Read, validate and write PEFT LoRA adapter folders.

A PEFT LoRA folder holds `adapter_config.json` and `adapter_model.safetensors`, whose keys look like
`base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` (r, in_features) and
`...q_proj.lora_B.weight` (out_features, r). This module knows that layout and nothing about SVD:
keys are parsed here, once, into a :class:`LoraCandidate`, the adapter in memory that every
engine consumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from essa.atomic import atomic_write

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

    def key(self, factor: str) -> str:
        """The safetensors key of factor "A" or "B" of this module."""
        return f"{KEY_PREFIX}{self.name}{_FACTOR_SUFFIX[factor]}"


@dataclass
class LoraCandidate:
    """One LoRA adapter in memory: what ``SvdSpace.candidate(x)`` makes and every engine consumes.

    ``factors`` maps each adapted module (base-model path, layer, kind) to its A (r, in) and
    B (out, r), unscaled: the module's delta is ``scale * B @ A``. ``config`` is the
    adapter_config.json mapping, for writing a PEFT folder. Engines never modify the tensors.
    """

    factors: dict[LoraModule, tuple[torch.Tensor, torch.Tensor]]
    scale: float
    config: dict
    name: str = "candidate"


@dataclass(frozen=True)
class LoraAdapter:
    """A validated PEFT LoRA adapter loaded from disk."""

    path: Path
    candidate: LoraCandidate  # factors keyed by module, in (layer, name) order: the search layout's
    rank: int
    sha256: str  # of adapter_model.safetensors: identifies the frozen U/V in other processes

    @property
    def config(self) -> dict:
        return self.candidate.config

    @property
    def modules(self) -> tuple[LoraModule, ...]:
        return tuple(self.candidate.factors)

    @property
    def scale(self) -> float:
        """The factor PEFT and vLLM multiply B @ A by (lora_alpha / r, or / sqrt(r) for rsLoRA)."""
        return self.candidate.scale


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
    candidate = candidate_from_tensors(load_file(str(weights)), config, str(path))
    for module in candidate.factors:
        _check_target(path, config.get("target_modules"), module.name)
    return LoraAdapter(path, candidate, int(config["r"]), file_sha256(weights))


def candidate_from_tensors(tensors: dict[str, torch.Tensor], config: dict,
                           name: str = "candidate") -> LoraCandidate:
    """PEFT-keyed tensors in memory and their adapter_config mapping -> a LoraCandidate."""
    factors = _parse_factors(Path(name), tensors, int(config["r"]))
    return LoraCandidate(factors, lora_scale(config), config, name)


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


def _parse_factors(path: Path, tensors: dict[str, torch.Tensor],
                   rank: int) -> dict[LoraModule, tuple[torch.Tensor, torch.Tensor]]:
    """Pair lora_A / lora_B keys into {module: (A, B)}, shapes checked, sorted by (layer, name)."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, factor = _split_key(path, key)
        pairs.setdefault(name, {})[factor] = tensor
    if not pairs:
        raise AdapterError(f"{path / WEIGHTS_FILE}: no LoRA tensors")
    factors = {}
    for name, pair in pairs.items():
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
        module = LoraModule(name, int(layer.group(1)) if layer else None, name.rsplit(".", 1)[-1],
                            b.shape[0], a.shape[1])
        factors[module] = (a, b)
    order = sorted(factors, key=lambda m: (-1 if m.layer is None else m.layer, m.name))
    return {m: factors[m] for m in order}


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
    atomic_write(Path(folder) / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True))


def peft_tensors(candidate: LoraCandidate) -> dict[str, torch.Tensor]:
    """The candidate's factors under PEFT's safetensors keys (the same tensors, no copies)."""
    return {module.key(f): t for module, ab in candidate.factors.items() for f, t in zip("AB", ab)}


def write_adapter(folder: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Write a PEFT LoRA folder with plain safetensors; tensors are made contiguous and unshared."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors sharing storage (our materialized views do): copy each one.
    owned = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    atomic_write(folder / WEIGHTS_FILE, save(owned, metadata={"format": "pt"}))
    write_config(folder, config)
    return folder
