"""Where quantized copies live and how to recognise one (no torch: the master and --dry-run use it).

``essa quantize`` writes a compressed-tensors checkpoint of a local model to
``$ESSA_CACHE/quantized/<model folder name>-<hash of its absolute path>-<scheme>`` unless told
otherwise, with :data:`MANIFEST` beside the weights; ``model.quantization: int8|int4`` in the vLLM
engine serves that copy (or ``model.quantized_path``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from essa.models.prepare import cache_dir

SCHEMES = {"int8": "W8A8", "int4": "W4A16"}  # ours -> llmcompressor's preset name
MANIFEST = "essa_quantization.json"


def quantized_dir(model_path: Path, scheme: str) -> Path:
    """The default folder of ``model_path``'s ``scheme`` copy (whether or not it exists)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose from {sorted(SCHEMES)}")
    model_path = Path(model_path).expanduser().absolute()
    digest = hashlib.sha256(str(model_path).encode()).hexdigest()[:8]
    return cache_dir() / "quantized" / f"{model_path.name}-{digest}-{scheme}"


def read_manifest(folder: Path) -> dict | None:
    """The manifest ``essa quantize`` wrote in ``folder``, or None (no manifest: not ours)."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def checkpoint_quantization(folder: Path) -> str | None:
    """The ``quant_method`` a model folder's config.json declares (e.g. 'compressed-tensors',
    'gptq', 'bitsandbytes'), or None for a plain checkpoint."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    quant = json.loads(config.read_text()).get("quantization_config")
    return (quant or {}).get("quant_method", "unknown") if quant else None


def served_checkpoint(model_path: Path, quantization: str, quantized_path: str = "") -> Path:
    """The folder a vLLM engine loads for ``model.quantization``: ``model_path`` itself unless the
    scheme is int8/int4, then ``quantized_path`` or the default copy, checked to exist and to be
    quantized with that scheme; a missing copy names the command that makes it."""
    if quantization not in SCHEMES:
        return Path(model_path)
    folder = Path(quantized_path).expanduser() if quantized_path else quantized_dir(model_path, quantization)
    if not folder.is_dir():
        where = "model.quantized_path" if quantized_path else f"the {quantization} copy of {model_path}"
        raise FileNotFoundError(
            f"model.quantization={quantization}: {where} not found at {folder}. Make it with "
            f"`essa quantize {model_path} --scheme {quantization}` (the demo model: `essa prepare-model "
            f"--quantize {quantization}`), or point model.quantized_path at a compressed-tensors "
            f"checkpoint.")
    method = checkpoint_quantization(folder)
    if method is None:
        raise ValueError(f"model.quantization={quantization}: {folder} is not a quantized checkpoint "
                         f"(its config.json has no quantization_config)")
    manifest = read_manifest(folder)
    if manifest and manifest.get("scheme") != quantization:
        raise ValueError(f"model.quantization={quantization}: {folder} holds a "
                         f"{manifest.get('scheme')!r} copy (its {MANIFEST})")
    return folder


def weight_bytes(folder: Path) -> int:
    """Bytes of a checkpoint's safetensors files (the weights one engine loads)."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def source_fingerprint(model_path: Path) -> str:
    """A hash of the names, sizes and modification times of a checkpoint's config and weights:
    it changes when the model is written again (e.g. ``essa prepare-model --force``)."""
    model_path = Path(model_path)
    files = sorted([model_path / "config.json", *model_path.glob("*.safetensors")])
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def is_current_copy(folder: Path, model_path: Path, scheme: str) -> bool:
    """True when ``folder`` holds the round-to-nearest ``scheme`` copy that ``essa quantize``
    made of ``model_path`` as it is now (same path, same files)."""
    manifest = read_manifest(folder)
    if manifest is None or checkpoint_quantization(folder) != "compressed-tensors":
        return False
    model_path = Path(model_path).expanduser().absolute()
    return (manifest.get("scheme") == scheme and manifest.get("source") == str(model_path)
            and manifest.get("calibration") == "round-to-nearest"
            and manifest.get("source_fingerprint") == source_fingerprint(model_path))


def served_quantization(served: Path, quantization: str) -> str:
    """What the served checkpoint is, for mode rules and logs: ``model.quantization`` when set,
    else '<method> checkpoint' for a model.path that is itself quantized, else 'none'."""
    if quantization != "none":
        return quantization
    method = checkpoint_quantization(served)
    return f"{method} checkpoint" if method else "none"
