"""The SVD-LoRA search space: a short vector of singular values <-> a loadable LoRA adapter.

Each LoRA factor is decomposed on its own (float64): A = U_A diag(s_A) V_Aᵀ (A is (r, in)) and
B = U_B diag(s_B) V_Bᵀ (B is (out, r)). U and V are frozen; the vector holds the top
k = floor(alpha_frac * r) singular values of every factor, the other r - k keep their source values.
lora_alpha and r stay as in the source adapter_config.json, so the loader applies its usual scaling.

Every process rebuilds the space from the same adapter folder (SVD is deterministic for the same
input and library); `record()` / `from_record()` carry the path and the weights' sha256 to check it.

    space = SvdSpace.from_folder("runs/sft/adapter", alpha_frac=1.0)
    x0 = space.initial_vector()                  # (d,) the source singular values
    space.write_candidate(x, "/dev/shm/cand0")   # a PEFT folder vLLM or peft can load
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from essa.adapters.flat_safetensors import build_header, write_flat
from essa.adapters.layout import Slice, build_layout, searched_count, summarize
from essa.adapters.materialize import FactorSVD, Materializer
from essa.adapters.peft_io import (KEY_PREFIX, WEIGHTS_FILE, AdapterError, LoraAdapter,
                                   read_adapter, write_config)


def decompose(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float64: (U (m, p), s (p,) descending, Vᵀ (p, n)) with p = min(m, n)."""
    return torch.linalg.svd(matrix.detach().to(torch.float64), full_matrices=False)


class SvdSpace:
    """The search space over the singular values of one source LoRA adapter."""

    def __init__(self, adapter: LoraAdapter, alpha_frac: float = 1.0):
        self.adapter = adapter
        self.alpha_frac = float(alpha_frac)
        self.rank = adapter.rank
        self.k = searched_count(self.rank, self.alpha_frac)
        self.layout: list[Slice] = build_layout(adapter.modules, self.k)
        self.dim = len(self.layout) * self.k
        self.summary = summarize(adapter.modules, self.k)
        self.scale = adapter.scale
        self.checksum = adapter.sha256
        self._factors = [self._decompose_slice(sl) for sl in self.layout]
        self._x0 = np.concatenate([f.s[: self.k].numpy() for f in self._factors])  # (d,) float64
        self._materializer = Materializer(self._factors, self.k, self.dim)
        self._headers: dict[torch.dtype, bytes] = {}

    @classmethod
    def from_folder(cls, path: str | Path, alpha_frac: float = 1.0) -> "SvdSpace":
        """Read and validate a PEFT LoRA folder, then decompose every factor."""
        return cls(read_adapter(path), alpha_frac)

    def _decompose_slice(self, sl: Slice) -> FactorSVD:
        key = f"{KEY_PREFIX}{sl.module}.lora_{sl.factor}.weight"
        u, s, vt = decompose(self.adapter.tensors[key])
        return FactorSVD(key, u, s, vt, sl.start)

    # ---- the vector -------------------------------------------------------------------------

    def initial_vector(self) -> np.ndarray:
        """The source adapter's searched singular values, (d,) float64 (a fresh copy)."""
        return self._x0.copy()

    def vector_from_relative(self, z: np.ndarray) -> np.ndarray:
        """s = s0 * (1 + z): for searching relative changes, where z = 0 is the source adapter."""
        return self._x0 * (1.0 + np.asarray(z, dtype=np.float64))

    # ---- vector -> tensors ------------------------------------------------------------------

    def materialize(self, vector: np.ndarray,
                    dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """LoRA tensors under PEFT's keys: lora_A (r, in), lora_B (out, r), unscaled.

        Every call allocates new storage (the tensors are views into one fresh flat buffer):
        vLLM multiplies lora_B by alpha / r in place, so it must never see the same tensors twice.
        """
        return self._materializer.tensors(self._materializer.flat(vector, dtype))

    def delta_weights(self, vector: np.ndarray) -> dict[str, torch.Tensor]:
        """scale * B' @ A' per module (out, in) float32, keyed by the base model's module path.

        For engines that merge a candidate into the base weights instead of running LoRA.
        """
        tensors = self.materialize(vector)
        by_shape: dict[tuple[int, int], list] = {}
        for m in self.adapter.modules:
            by_shape.setdefault((m.out_features, m.in_features), []).append(m)
        deltas = {}
        for members in by_shape.values():
            b = torch.stack([tensors[m.b_key] for m in members])  # (n, out, r)
            a = torch.stack([tensors[m.a_key] for m in members])  # (n, r, in)
            delta = torch.bmm(b, a).mul_(self.scale)  # (n, out, in)
            deltas.update({m.name: delta[i] for i, m in enumerate(members)})
        return {m.name: deltas[m.name] for m in self.adapter.modules}

    def write_candidate(self, vector: np.ndarray, folder: str | Path,
                        dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Write a PEFT adapter folder for `vector` (tmpfs, e.g. /dev/shm); return its tensors.

        The config is the source's adapter_config.json unchanged; the weights file is written in
        one piece from the flat buffer. The returned tensors are the ones written (not shared
        with any earlier call).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        flat = self._materializer.flat(vector, dtype)
        if dtype not in self._headers:
            entries = [(key, shape) for key, _, shape in self._materializer.entries]
            self._headers[dtype] = build_header(entries, dtype)
        write_flat(folder / WEIGHTS_FILE, self._headers[dtype], flat)
        write_config(folder, self.adapter.config)
        return self._materializer.tensors(flat)

    # ---- rebuilding in another process -----------------------------------------------------

    def record(self) -> dict:
        """JSON-able description that lets another process rebuild and verify this space."""
        return {"source": str(self.adapter.path.resolve()), "sha256": self.checksum,
                "alpha_frac": self.alpha_frac, "rank": self.rank, "k": self.k, "dim": self.dim,
                "modules": [m.name for m in self.adapter.modules], "summary": self.summary}

    @classmethod
    def from_record(cls, record: dict, path: str | Path | None = None) -> "SvdSpace":
        """Rebuild from `record()` (optionally from a copy of the adapter at `path`); verify it."""
        space = cls.from_folder(path or record["source"], record["alpha_frac"])
        if space.checksum != record["sha256"]:
            raise AdapterError(
                f"{space.adapter.path}: {WEIGHTS_FILE} sha256 {space.checksum[:12]}... differs "
                f"from the recorded {record['sha256'][:12]}...: not the same source adapter, "
                "the search vectors would mean something else")
        names = [m.name for m in space.adapter.modules]
        if space.dim != record["dim"] or names != record["modules"]:
            raise AdapterError(f"{space.adapter.path}: layout differs from the record")
        return space

    def __repr__(self) -> str:
        return f"SvdSpace({self.adapter.path}, alpha_frac={self.alpha_frac}: {self.summary})"
