"""Merged mode for vLLM: add a candidate's delta into the base weights, generate, restore.

vLLM fuses q/k/v into ``qkv_proj`` and gate/up into ``gate_up_proj``: a q, k or v delta is a row
block of the fused weight. Restoring copies back the saved original tensors (never subtracting:
bf16 rounding would drift). On the CPU build, unquantized linear weights are packed at load time
and ``.weight`` is emptied, so the originals are read from the checkpoint and every change is
followed by vLLM's own re-dispatch of the packed kernel.
"""

from __future__ import annotations

from pathlib import Path

import torch

_FUSED = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
          "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
          "o_proj": ("o_proj", None), "down_proj": ("down_proj", None)}


def fused_target(kind: str) -> tuple[str, int | None]:
    """Module kind -> (vLLM module name, block index in the fused weight or None)."""
    if kind not in _FUSED:
        raise ValueError(f"merged mode cannot place a LoRA on {kind!r}; supported: {sorted(_FUSED)}")
    return _FUSED[kind]


class MergedWeights:
    """Holds the original weights of the touched vLLM layers and swaps candidates in and out."""

    def __init__(self, model: torch.nn.Module, checkpoint_dir: Path, kinds: list[str], on_cpu: bool):
        self.model, self.on_cpu = model, on_cpu
        self.layers = model.model.layers
        self.fused_names = sorted({fused_target(k)[0] for k in kinds})
        self.originals = self._load_originals(Path(checkpoint_dir))
        # Row offsets of the blocks inside each fused weight, from the original shapes.
        self.blocks = self._block_rows(Path(checkpoint_dir))
        self._touched: list[tuple[int, str]] = []  # modules holding a candidate now

    def _module(self, layer: int, name: str) -> torch.nn.Module:
        parent = self.layers[layer].self_attn if name in ("qkv_proj", "o_proj") else self.layers[layer].mlp
        module = getattr(parent, name)
        return getattr(module, "base_layer", module)  # with LoRA enabled, vLLM wraps the layer

    def _load_originals(self, folder: Path) -> dict[tuple[int, str], torch.Tensor]:
        """Original fused weights (out, in) in the engine's dtype, rebuilt from the checkpoint."""
        from safetensors import safe_open
        files = sorted(folder.glob("*.safetensors"))
        tensors: dict[str, torch.Tensor] = {}
        wanted = {kind for kind, (name, _) in _FUSED.items() if name in self.fused_names}
        for f in files:
            with safe_open(str(f), "pt") as st:
                for key in st.keys():
                    parts = key.split(".")
                    if len(parts) >= 5 and parts[-2] in wanted and parts[-1] == "weight":
                        tensors[key] = st.get_tensor(key)
        dtype = next(self.model.parameters()).dtype
        # The checkpoint modules making up each fused vLLM module, in row-block order.
        parts = {name: [k for k, (n, _) in sorted(_FUSED.items(), key=lambda kv: kv[1][1] or 0)
                        if n == name] for name in self.fused_names}
        originals = {}
        for i in range(len(self.layers)):
            for name in self.fused_names:
                group = "self_attn" if name in ("qkv_proj", "o_proj") else "mlp"
                rows = [tensors[f"model.layers.{i}.{group}.{k}.weight"] for k in parts[name]]
                originals[(i, name)] = torch.cat(rows, 0).to(dtype).contiguous()
        return originals

    def _block_rows(self, folder: Path) -> dict[str, list[tuple[int, int]]]:
        out = {}
        import json
        cfg = json.loads((folder / "config.json").read_text())
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        q = cfg["num_attention_heads"] * head_dim
        kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * head_dim
        inter = cfg.get("intermediate_size", 0)
        out["qkv_proj"] = [(0, q), (q, q + kv), (q + kv, q + 2 * kv)]
        out["gate_up_proj"] = [(0, inter), (inter, 2 * inter)]
        return out

    def _set(self, layer: int, name: str, weight: torch.Tensor) -> None:
        module = self._module(layer, name)
        module._essa_weight = weight  # what vLLM was last given (CPU packing hides .weight)
        if self.on_cpu:
            from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
            module.weight = torch.nn.Parameter(weight, requires_grad=False)
            dispatch_cpu_unquantized_gemm(module, remove_weight=True)
        else:
            module.weight.data.copy_(weight)

    def apply(self, deltas: dict[tuple[int, str], torch.Tensor]) -> None:
        """Base + delta for every module the candidate touches (one candidate at a time).

        A module the previous candidate touched is overwritten directly (base + the new delta,
        from the saved original) instead of being restored first: one weight swap per module
        between consecutive candidates, not two. Modules only the previous one touched are restored.
        """
        by_target: dict[tuple[int, str], list[tuple[int | None, torch.Tensor]]] = {}
        for (layer, kind), delta in deltas.items():
            name, block = fused_target(kind)
            if name not in self.fused_names:
                raise ValueError(f"merged mode was set up for {self.fused_names}, not {kind}")
            by_target.setdefault((layer, name), []).append((block, delta))
        for layer, name in self._touched:
            if (layer, name) not in by_target:
                self._set(layer, name, self.originals[(layer, name)].clone())
        for (layer, name), parts in by_target.items():
            # A fresh float32 copy: ``.float()`` of a float32 tensor is the tensor itself, and
            # adding into it would corrupt the saved original (every later swap drifts).
            merged = self.originals[(layer, name)].to(torch.float32, copy=True)
            for block, delta in parts:
                if block is None:
                    merged += delta
                else:
                    start, stop = self.blocks[name][block]
                    merged[start:stop] += delta
            self._set(layer, name, merged.to(self.originals[(layer, name)].dtype))  # float32: no copy
        self._touched = list(by_target)

    def restore(self) -> None:
        """Put the saved original tensors back, exactly."""
        for layer, name in self._touched:
            self._set(layer, name, self.originals[(layer, name)].clone())
        self._touched = []

    def current_weight(self, layer: int, name: str) -> torch.Tensor:
        """The weight a module holds now (for tests: bit-identical restore)."""
        module = self._module(layer, name)
        if self.on_cpu:
            return getattr(module, "_essa_weight", None)
        return module.weight.detach().clone()
