"""LoRA candidates as the engines take them: ``None``, a PEFT folder or a :class:`LoraCandidate`."""

from __future__ import annotations

from typing import Any

import torch

from essa.adapters.peft_io import LoraCandidate, read_adapter


def as_lora_candidate(candidate: Any) -> LoraCandidate:
    """A folder -> its candidate (read and validated); a LoraCandidate passes through."""
    return candidate if isinstance(candidate, LoraCandidate) else read_adapter(candidate).candidate


def module_deltas(candidate: LoraCandidate) -> dict[tuple[int, str], torch.Tensor]:
    """{(layer, module kind): scale * B @ A (out, in) float32} for every LoRA module (merged mode)."""
    deltas = {}
    for module, (a, b) in candidate.factors.items():
        if module.layer is None:
            raise ValueError(f"candidate {candidate.name}: module {module.name} is not in a layer")
        deltas[module.layer, module.kind] = candidate.scale * (b.float() @ a.float())  # (out, in)
    return deltas
