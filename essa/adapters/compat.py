"""Check that an adapter's module shapes fit a base model, from the model's config alone.

Only decoder-style models with Llama naming (Llama, Qwen2, Mistral, SmolLM, ...) are known: the
attention projections q/k/v/o and the MLP projections gate/up/down.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from essa.adapters.peft_io import AdapterError, LoraAdapter, read_adapter


def expected_shapes(model_config: Any) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of every known projection kind, from a model config."""
    cfg = _as_dict(model_config)
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter = int(cfg.get("intermediate_size") or 4 * hidden)
    return {
        "q_proj": (heads * head_dim, hidden),
        "k_proj": (kv_heads * head_dim, hidden),
        "v_proj": (kv_heads * head_dim, hidden),
        "o_proj": (hidden, heads * head_dim),
        "gate_proj": (inter, hidden),
        "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
    }


def check_compatible(adapter: LoraAdapter | str | Path, model_config: Any) -> None:
    """Raise AdapterError unless every adapter module exists in the model with matching shapes.

    `model_config` is a transformers config object, a dict, or a model folder holding config.json.
    """
    if not isinstance(adapter, LoraAdapter):
        adapter = read_adapter(adapter)
    cfg = _as_dict(model_config)
    shapes = expected_shapes(cfg)
    n_layers = int(cfg["num_hidden_layers"])
    for module in adapter.modules:
        if module.kind not in shapes:
            raise AdapterError(f"{adapter.path}: unknown target module {module.name!r} "
                               f"(known kinds: {', '.join(shapes)})")
        if module.layer is None or module.layer >= n_layers:
            raise AdapterError(f"{adapter.path}: module {module.name} is not in the model's "
                               f"{n_layers} layers")
        want = shapes[module.kind]
        have = (module.out_features, module.in_features)
        if have != want:
            raise AdapterError(
                f"{adapter.path}: module {module.name}: adapter is {have[0]}x{have[1]} "
                f"(lora_B rows x lora_A columns), the model's {module.kind} is {want[0]}x{want[1]}")


def _as_dict(model_config: Any) -> dict:
    """Accept a dict, a transformers PretrainedConfig, or a folder / config.json path."""
    if isinstance(model_config, dict):
        return model_config
    if isinstance(model_config, (str, Path)):
        path = Path(model_config)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise AdapterError(f"{path}: no model config found")
        return json.loads(path.read_text())
    if hasattr(model_config, "to_dict"):
        return model_config.to_dict()
    raise TypeError(f"unsupported model config type {type(model_config).__name__}")
