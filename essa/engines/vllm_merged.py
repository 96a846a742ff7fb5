"""Merged mode's weights for vLLM: add a candidate's delta into the base weights, then restore.

vLLM fuses q/k/v into ``qkv_proj`` and gate/up into ``gate_up_proj``: a q, k or v delta is a row
block of the fused weight. Restoring copies back the saved original tensors (never subtracting:
bf16 rounding would drift). On the CPU build, unquantized linear weights are packed at load time
and ``.weight`` is emptied, so the originals are read from the checkpoint and every change is
re-packed (all of it through :mod:`essa.engines.vllm_internals`).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from safetensors import safe_open

from essa.adapters.compat import expected_shapes
from essa.engines import vllm_internals as internals


class MergedWeights:
    """Holds the original weights of the touched vLLM layers and swaps candidates in and out."""

    def __init__(self, model: torch.nn.Module, checkpoint_dir: Path, kinds: list[str], on_cpu: bool):
        self.model, self.on_cpu = model, on_cpu
        self.fused_names = sorted({internals.fused_target(k)[0] for k in kinds})
        checkpoint_dir = Path(checkpoint_dir)
        shapes = expected_shapes(checkpoint_dir)
        # Row ranges of the checkpoint modules inside each fused weight, in block order.
        self.blocks = {}
        for name in self.fused_names:
            ends = list(itertools.accumulate(shapes[k][0] for k in internals.fused_parts(name)))
            self.blocks[name] = list(zip([0] + ends[:-1], ends))
        self.originals = self._load_originals(checkpoint_dir)
        self._touched: list[tuple[int, str]] = []  # modules holding a candidate now

    def _load_originals(self, folder: Path) -> dict[tuple[int, str], torch.Tensor]:
        """Original fused weights (out, in) in the engine's dtype, rebuilt from the checkpoint."""
        def key(layer: int, name: str, kind: str) -> str:
            group = "self_attn" if name in ("qkv_proj", "o_proj") else "mlp"
            return f"model.layers.{layer}.{group}.{kind}.weight"
        targets = [(i, name) for i in range(internals.num_layers(self.model)) for name in self.fused_names]
        wanted = {key(i, name, kind) for i, name in targets for kind in internals.fused_parts(name)}
        tensors: dict[str, torch.Tensor] = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), "pt") as st:
                tensors.update({k: st.get_tensor(k) for k in st.keys() if k in wanted})
        dtype = next(self.model.parameters()).dtype
        return {(i, name): torch.cat([tensors[key(i, name, kind)] for kind in internals.fused_parts(name)])
                .to(dtype).contiguous() for i, name in targets}

    def _set(self, layer: int, name: str, weight: torch.Tensor) -> None:
        internals.set_linear_weight(internals.linear_module(self.model, layer, name), weight, self.on_cpu)

    def apply(self, deltas: dict[tuple[int, str], torch.Tensor]) -> None:
        """Base + delta for every module the candidate touches (one candidate at a time).

        A module the previous candidate touched is overwritten directly (base + the new delta,
        from the saved original) instead of being restored first: one weight swap per module
        between consecutive candidates, not two. Modules only the previous one touched are restored.
        """
        by_target: dict[tuple[int, str], list[tuple[int | None, torch.Tensor]]] = {}
        for (layer, kind), delta in deltas.items():
            name, block = internals.fused_target(kind)
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

    def current_weight(self, layer: int, name: str) -> torch.Tensor | None:
        """The weight a module holds now (for tests: bit-identical restore)."""
        return internals.linear_weight(internals.linear_module(self.model, layer, name), self.on_cpu)
