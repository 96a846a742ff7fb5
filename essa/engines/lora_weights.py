"""LoRA candidates as per-module weight deltas, and as adapter folders on tmpfs.

Shared by the engines: a candidate arrives as ``None``, a PEFT folder or a :class:`LoraCandidate`;
merged mode needs ``scale * B @ A`` per module, adapter mode needs a folder vLLM can load.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from essa.adapters.peft_io import lora_scale
from essa.engines.base import LoraCandidate

_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


def as_lora_candidate(candidate: Any) -> LoraCandidate:
    """A folder -> its tensors and config (validated); a LoraCandidate passes through."""
    if isinstance(candidate, LoraCandidate):
        return candidate
    from essa.adapters.peft_io import read_adapter
    adapter = read_adapter(candidate)
    return LoraCandidate(tensors=adapter.tensors, config=adapter.config, name=str(candidate))


def module_deltas(candidate: LoraCandidate) -> dict[tuple[int, str], torch.Tensor]:
    """{(layer, module kind): scale * B @ A (out, in) float32} for every LoRA module."""
    pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in candidate.tensors.items():
        m = _KEY.search(key)
        if m is None:
            raise ValueError(f"candidate {candidate.name}: unexpected LoRA key {key!r}")
        pairs.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = tensor
    scale = lora_scale(candidate.config)
    deltas = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"candidate {candidate.name}: module {module} lacks lora_A or lora_B")
        deltas[module] = scale * (ab["B"].float() @ ab["A"].float())  # (out, r) @ (r, in)
    return deltas


class AdapterFolders:
    """Candidate adapter folders under one tmpfs root, each with a never-reused integer id."""

    def __init__(self, root: str | None = None):
        base = Path(root or ("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp"))
        self.root = base / f"essa-adapters-{os.getpid()}"
        self.root.mkdir(parents=True, exist_ok=True)
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def write(self, candidate: LoraCandidate, lora_id: int) -> Path:
        """Write a candidate's tensors as a PEFT folder (vLLM gets files, never the caller's objects)."""
        from essa.adapters.peft_io import write_adapter
        folder = self.root / f"candidate-{lora_id}"
        write_adapter(folder, candidate.tensors, candidate.config)  # writes copies
        return folder

    def remove(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
