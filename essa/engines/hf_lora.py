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

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from essa.adapters.peft_io import KEY_PREFIX, lora_scale
from essa.engines.base import LoraCandidate

_A_SUFFIX, _B_SUFFIX = ".lora_A.weight", ".lora_B.weight"


@dataclass
class Factors:
    """One candidate's factors on one module: A (r, in) and scale * B (out, r), float32 copies."""

    a: torch.Tensor
    b: torch.Tensor


def module_factors(candidate: LoraCandidate) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{base model module path: (A (r, in), B (out, r))} from PEFT-keyed tensors (no copies)."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in candidate.tensors.items():
        if not key.startswith(KEY_PREFIX) or not key.endswith((_A_SUFFIX, _B_SUFFIX)):
            raise ValueError(f"candidate {candidate.name}: unexpected LoRA key {key!r}")
        factor = "A" if key.endswith(_A_SUFFIX) else "B"
        name = key[len(KEY_PREFIX):-len(_A_SUFFIX)]  # both suffixes have the same length
        pairs.setdefault(name, {})[factor] = tensor
    out = {}
    for name, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"candidate {candidate.name}: module {name} lacks lora_A or lora_B")
        out[name] = (pair["A"], pair["B"])
    return out


class BatchedLora:
    """Per-row-group LoRA deltas on a loaded model, for a fixed list of candidate slots."""

    def __init__(self, model: torch.nn.Module, candidates: Sequence[LoraCandidate | None],
                 dtype: torch.dtype = torch.float32):
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = dtype
        # module path -> one Factors (or None: no delta) per candidate slot
        self.factors: dict[str, list[Factors | None]] = {}
        for slot, candidate in enumerate(candidates):
            if candidate is not None:
                self._add(slot, len(candidates), candidate)
        self._segments: list[tuple[int, int, int]] = []

    def _add(self, slot: int, slots: int, candidate: LoraCandidate) -> None:
        scale = lora_scale(candidate.config)
        for name, (a, b) in module_factors(candidate).items():
            module = self._module(candidate, name)
            in_f, out_f = _features(module)
            if a.ndim != 2 or b.ndim != 2 or a.shape[1] != in_f or b.shape[0] != out_f \
                    or a.shape[0] != b.shape[1]:
                raise ValueError(f"candidate {candidate.name}: {name}: lora_A {tuple(a.shape)} / "
                                 f"lora_B {tuple(b.shape)} do not fit a ({out_f}, {in_f}) layer")
            # Copies: .to(copy=True) never aliases the caller's storage; the scale is folded once.
            a_own = a.detach().to(self.device, self.dtype, copy=True)  # (r, in)
            b_own = b.detach().to(self.device, self.dtype, copy=True).mul_(scale)  # (out, r)
            self.factors.setdefault(name, [None] * slots)[slot] = Factors(a_own, b_own)

    def _module(self, candidate: LoraCandidate, name: str) -> torch.nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError as err:
            raise ValueError(f"candidate {candidate.name}: the model has no module {name!r}") from err

    @property
    def empty(self) -> bool:
        """True when no slot carries a LoRA (a base-only pass needs no hooks)."""
        return not self.factors

    @contextmanager
    def active(self, segments: Sequence[tuple[int, int, int]]) -> Iterator[None]:
        """Hooks on while inside: rows [start, stop) of every batch get slot ``slot``'s delta.

        The segments must cover the batch the model sees inside the block (generation keeps the
        batch rows fixed, so one segment list serves every decoding step).
        """
        if self.empty:
            yield
            return
        self._segments = list(segments)
        handles = [self.model.get_submodule(name).register_forward_hook(self._hook(per_slot))
                   for name, per_slot in self.factors.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._segments = []

    def _hook(self, per_slot: list[Factors | None]):
        def add_delta(module, args, output):
            x = args[0]  # (N, T, in) for N batch rows
            for slot, start, stop in self._segments:
                f = per_slot[slot]
                if f is None or stop <= start:
                    continue
                rows = x[start:stop].to(self.dtype)  # (n, T, in)
                delta = (rows @ f.a.T) @ f.b.T  # (n, T, r) -> (n, T, out)
                # Add in float32 then round once, as peft does for a bf16 base.
                output[start:stop] = (output[start:stop].to(self.dtype) + delta).to(output.dtype)
            return output
        return add_delta


def _features(module: torch.nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a linear layer, plain or bitsandbytes."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    raise ValueError(f"{type(module).__name__} is not a linear layer: LoRA cannot be placed on it")


def row_segments(slots_of_rows: Sequence[int]) -> list[tuple[int, int, int]]:
    """[slot per batch row] -> [(slot, start, stop)] runs of equal slots, in row order."""
    segments: list[tuple[int, int, int]] = []
    for row, slot in enumerate(slots_of_rows):
        if segments and segments[-1][0] == slot and segments[-1][2] == row:
            segments[-1] = (slot, segments[-1][1], row + 1)
        else:
            segments.append((slot, row, row + 1))
    return segments
