"""Several LoRA candidates in one transformers forward pass, each on its own rows of the batch.

The base model is never touched. A forward hook on every targeted linear layer adds, to the rows of
candidate k only, ``scale_k * (x @ A_kᵀ) @ B_kᵀ``. The hook sees only the layer's input and output,
so it works the same over a plain ``nn.Linear`` and over bitsandbytes' INT8 / 4-bit layers, and it
needs no peft model wrapping (no adapter to load, name or delete per candidate).

    lora = BatchedLora(model, [None, cand_a, cand_b])     # slot 0 is the base model
    with lora.active([(0, 0, 4), (1, 4, 8), (2, 8, 12)]):   # (slot, first row, row after last)
        model.generate(...)

The factors are copied (float32, scale folded into B) when ``BatchedLora`` is built: the caller's
tensors are never modified, and later changes to them do not reach a pass already set up.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from essa.adapters.peft_io import LoraCandidate


class BatchedLora:
    """Per-row-group LoRA deltas on a loaded model, for a fixed list of candidate slots."""

    def __init__(self, model: torch.nn.Module, candidates: Sequence[LoraCandidate | None]):
        self.model = model
        device = next(model.parameters()).device
        # module path -> per slot (A (r, in), scale * B (out, r)) float32 copies, or None: no delta
        self.factors: dict[str, list[tuple[torch.Tensor, torch.Tensor] | None]] = {}
        for slot, candidate in enumerate(candidates):
            for module, (a, b) in (candidate.factors.items() if candidate is not None else ()):
                try:  # a plain or bitsandbytes linear layer
                    layer = model.get_submodule(module.name)
                    in_f, out_f = int(layer.in_features), int(layer.out_features)
                except AttributeError as err:
                    raise ValueError(f"candidate {candidate.name}: the model has no linear layer "
                                     f"{module.name!r}") from err
                if a.ndim != 2 or b.ndim != 2 or a.shape[1] != in_f or b.shape[0] != out_f \
                        or a.shape[0] != b.shape[1]:
                    raise ValueError(f"candidate {candidate.name}: {module.name}: lora_A {tuple(a.shape)} "
                                     f"/ lora_B {tuple(b.shape)} do not fit a ({out_f}, {in_f}) layer")
                # .to(copy=True) never aliases the caller's storage; the scale is folded in once.
                own = (a.detach().to(device, torch.float32, copy=True),
                       b.detach().to(device, torch.float32, copy=True).mul_(candidate.scale))
                self.factors.setdefault(module.name, [None] * len(candidates))[slot] = own
        self._segments: list[tuple[int, int, int]] = []

    @contextmanager
    def active(self, segments: Sequence[tuple[int, int, int]]) -> Iterator[None]:
        """Hooks on while inside: rows [start, stop) of every batch get slot ``slot``'s delta.

        The segments must cover the batch the model sees inside the block (generation keeps the
        batch rows fixed, so one segment list serves every decoding step).
        """
        self._segments = list(segments)
        handles = [self.model.get_submodule(name).register_forward_hook(self._hook(per_slot))
                   for name, per_slot in self.factors.items()]  # none for a base-only pass
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._segments = []

    def _hook(self, per_slot: list):
        def add_delta(module, args, output):
            x = args[0]  # (N, T, in) for N batch rows
            for slot, start, stop in self._segments:
                if per_slot[slot] is None or stop <= start:
                    continue
                a, b = per_slot[slot]
                delta = (x[start:stop].float() @ a.T) @ b.T  # (n, T, r) -> (n, T, out)
                # Add in float32 then round once, as peft does for a bf16 base.
                output[start:stop] = (output[start:stop].float() + delta).to(output.dtype)
            return output
        return add_delta


def row_segments(slots_of_rows: Sequence[int]) -> list[tuple[int, int, int]]:
    """[slot per batch row] -> [(slot, start, stop)] runs of equal slots, in row order."""
    segments, row = [], 0
    for slot, run in itertools.groupby(slots_of_rows):
        count = len(list(run))
        segments.append((slot, row, row + count))
        row += count
    return segments
