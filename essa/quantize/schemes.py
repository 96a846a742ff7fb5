"""Which weights a scheme quantizes and the int4 group size, read from the safetensors headers.

No torch: the shapes come from the file headers (``safetensors.safe_open`` reads no tensor data),
so a 32B checkpoint is checked in a second before the quantize venv starts.

int8 is W8A8: int8 weights with one scale per output channel, activations quantized per token at
run time (dynamic); no group size. int4 is W4A16: int4 weights with one scale per ``group_size``
input columns (or per output channel), activations left in 16 bits. A group must tile every
quantized layer's input dimension, so the group size has to divide each layer's in_features.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from essa.quantize.paths import SCHEMES

INT4_GROUP_SIZES = (128, 64, 32)  # tried in this order when none is asked for
PER_CHANNEL = "channel"
# Never quantized (llmcompressor's recipe ignores lm_head; embeddings are not Linear layers).
_SKIPPED = ("embed", "lm_head", "wte", "wpe")


def weight_files(model_path: Path) -> list[Path]:
    """The safetensors files of a checkpoint (the shards its index names, else model.safetensors)."""
    model_path = Path(model_path)
    index = model_path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_path / name for name in shards]
    files = sorted(model_path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_path}: no *.safetensors weights (essa quantize reads "
                                f"safetensors checkpoints only)")
    return files


def linear_in_features(model_path: Path) -> dict[str, int]:
    """Tensor name -> in_features of every weight the recipe quantizes: the 2-D ``*.weight``
    tensors (Linear weights are (out_features, in_features)), embeddings and lm_head left out."""
    sizes = {}
    for path in weight_files(model_path):
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                if not name.endswith(".weight") or any(s in name for s in _SKIPPED):
                    continue
                shape = f.get_slice(name).get_shape()
                if len(shape) == 2:
                    sizes[name] = int(shape[1])
    if not sizes:
        raise ValueError(f"{model_path}: no 2-D weight tensors to quantize")
    return sizes


def choose_group_size(in_features: dict[str, int], requested: int | None = None) -> int | str:
    """The int4 group size: ``requested`` if it divides every layer's in_features (else a
    ValueError naming the first layer it does not divide), otherwise the largest of
    :data:`INT4_GROUP_SIZES` that divides all, else :data:`PER_CHANNEL`."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"group size must be a positive integer, got {requested}")
        for name, size in in_features.items():
            if size % requested:
                raise ValueError(f"group size {requested} does not divide the input size of "
                                 f"{name} ({size}); choose a divisor of every layer's input size "
                                 f"or leave --group-size out")
        return requested
    for size in INT4_GROUP_SIZES:
        if all(n % size == 0 for n in in_features.values()):
            return size
    return PER_CHANNEL


def scheme_group_size(model_path: Path, scheme: str, requested: int | None = None) -> int | str | None:
    """The group size ``scheme`` uses on ``model_path``: None for int8 (per-channel, no groups),
    the int4 choice of :func:`choose_group_size` from the checkpoint's headers."""
    if scheme == "int8":
        if requested is not None:
            raise ValueError("--group-size applies to int4 only (int8 weights have one scale "
                             "per output channel)")
        return None
    if scheme == "int4":
        return choose_group_size(linear_in_features(model_path), requested)
    raise ValueError(f"unknown quantization scheme {scheme!r}; choose from {sorted(SCHEMES)}")
