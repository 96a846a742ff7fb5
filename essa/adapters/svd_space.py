"""The SVD-LoRA search space: a short vector of singular values <-> a loadable LoRA adapter.

Each LoRA factor is decomposed on its own (float64): A = U_A diag(s_A) V_Aᵀ (A is (r, in)) and
B = U_B diag(s_B) V_Bᵀ (B is (out, r)). U and V are frozen; the vector holds the top
k = floor(alpha_frac * r) singular values of every factor, the other r - k keep their source values.
lora_alpha and r stay as in the source adapter_config.json, so the loader applies its usual scaling.

The parametrization says what a search vector x means: ``absolute``, the singular values
themselves; ``relative``, s = s0 * (1 + x), so x = 0 is the source adapter. Only this class reads
it. Every process rebuilds the space from the same adapter folder (SVD is deterministic for the
same input and library); `record()` / `from_record()` carry the path, the parametrization and the
weights' sha256 to check it.

Factors of the same shape (all lora_A of q/k/v/o are (r, hidden); lora_B splits by out_features)
are stacked once in float32, so a candidate costs a handful of batched matmuls writing into one
flat buffer, which is also the byte layout of the candidate's safetensors file.

    space = SvdSpace.from_folder("runs/sft/adapter", alpha_frac=1.0, parametrization="relative")
    x0 = space.start_vector()                      # (d,) the source adapter
    candidate = space.candidate(x)                 # a LoraCandidate, for any engine
    space.write_candidate(x, "/dev/shm/cand0")     # a PEFT folder vLLM or peft can load
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from essa.adapters.flat_safetensors import build_header, write_flat
from essa.adapters.layout import Slice, build_layout, searched_count, summarize
from essa.adapters.peft_io import (WEIGHTS_FILE, AdapterError, LoraAdapter, LoraCandidate,
                                   read_adapter, write_config)

PARAMETRIZATIONS = ("absolute", "relative")


def decompose(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float64: (U (m, p), s (p,) descending, Vᵀ (p, n)) with p = min(m, n)."""
    return torch.linalg.svd(matrix.detach().to(torch.float64), full_matrices=False)


@dataclass(frozen=True)
class _Group:
    """Same-shaped factors, stacked in float32 for one batched matmul."""

    slices: list[Slice]
    left: torch.Tensor  # (n, rows, r): U
    right: torch.Tensor  # (n, r, cols): Vᵀ
    s0: torch.Tensor  # (n, r) source singular values (the non-searched ones stay)
    index: torch.Tensor  # (n, k) int64: vector coordinates of the searched values
    offset: int  # element offset in the flat buffer


def _stack_by_shape(layout: list[Slice], svds: list) -> tuple[list[_Group], int]:
    """One stacked group per factor shape, and the length of the flat buffer they fill."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, (u, _, vt) in enumerate(svds):
        by_shape.setdefault((u.shape[0], vt.shape[1]), []).append(i)
    groups, numel = [], 0
    for (rows, cols), members in by_shape.items():
        groups.append(_Group([layout[i] for i in members],
                             torch.stack([svds[i][0] for i in members]).float().contiguous(),
                             torch.stack([svds[i][2] for i in members]).float().contiguous(),
                             torch.stack([svds[i][1] for i in members]).float(),
                             torch.stack([torch.arange(layout[i].start, layout[i].stop)
                                          for i in members]), numel))
        numel += len(members) * rows * cols
    return groups, numel


class SvdSpace:
    """The search space over the singular values of one source LoRA adapter."""

    def __init__(self, adapter: LoraAdapter, alpha_frac: float = 1.0,
                 parametrization: str = "absolute"):
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization {parametrization!r}: choose one of {PARAMETRIZATIONS}")
        self.adapter = adapter
        self.alpha_frac = float(alpha_frac)
        self.parametrization = parametrization
        self.rank = adapter.rank
        self.k = searched_count(self.rank, self.alpha_frac)
        self.layout = build_layout(adapter.modules, self.k)
        self.dim = len(self.layout) * self.k
        self.summary = summarize(adapter.modules, self.k)
        self.scale = adapter.scale
        self.checksum = adapter.sha256
        factors = adapter.candidate.factors
        svds = [decompose(factors[sl.module]["AB".index(sl.factor)]) for sl in self.layout]
        self._s0 = np.concatenate([s[: self.k].numpy() for _, s, _ in svds])  # (d,) float64
        self._groups, self._numel = _stack_by_shape(self.layout, svds)
        # (slice, element offset, shape) of every factor in the flat buffer, in buffer order.
        self._entries = [(sl, g.offset + i * g.left.shape[1] * g.right.shape[2],
                          (g.left.shape[1], g.right.shape[2]))
                         for g in self._groups for i, sl in enumerate(g.slices)]
        # For cutting a buffer into factors with one split: sizes in buffer order, and per
        # module (in module order) the positions of its A and B among them.
        self._sizes = [shape[0] * shape[1] for _, _, shape in self._entries]
        position = {(sl.module, sl.factor): i for i, (sl, _, _) in enumerate(self._entries)}
        self._module_parts = [(m, position[m, "A"], position[m, "B"]) for m in adapter.modules]
        self._headers: dict[torch.dtype, bytes] = {}

    @classmethod
    def from_folder(cls, path: str | Path, alpha_frac: float = 1.0,
                    parametrization: str = "absolute") -> "SvdSpace":
        """Read and validate a PEFT LoRA folder, then decompose every factor."""
        return cls(read_adapter(path), alpha_frac, parametrization)

    # ---- the vector -------------------------------------------------------------------------

    def start_vector(self) -> np.ndarray:
        """The search vector of the source adapter, (d,) float64: s0 (absolute) or 0 (relative)."""
        return np.zeros(self.dim) if self.parametrization == "relative" else self._s0.copy()

    def singular_values(self, x: np.ndarray) -> np.ndarray:
        """The searched singular values, (d,) float64, that search vector ``x`` stands for."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"vector has shape {x.shape}, the search space needs ({self.dim},)")
        if not np.all(np.isfinite(x)):
            raise ValueError("vector has non-finite values")
        return self._s0 * (1.0 + x) if self.parametrization == "relative" else x

    # ---- vector -> candidate ----------------------------------------------------------------

    def candidate(self, x: np.ndarray, name: str = "candidate",
                  dtype: torch.dtype = torch.float32) -> LoraCandidate:
        """The LoRA adapter of search vector ``x``: A (r, in), B (out, r) per module, unscaled.

        Every call allocates new storage (the factors are views into one fresh flat buffer):
        vLLM multiplies lora_B by alpha / r in place, so it must never see the same tensors twice.
        """
        return self._candidate(self._flat(x, dtype), name)

    def write_candidate(self, x: np.ndarray, folder: str | Path,
                        dtype: torch.dtype = torch.float32) -> LoraCandidate:
        """Write a PEFT adapter folder for ``x`` (tmpfs, e.g. /dev/shm); return its candidate.

        The config is the source's adapter_config.json unchanged; the weights file is written in
        one piece from the flat buffer. The returned factors are the ones written (not shared
        with any earlier call).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        flat = self._flat(x, dtype)
        if dtype not in self._headers:
            entries = [(sl.module.key(sl.factor), shape) for sl, _, shape in self._entries]
            self._headers[dtype] = build_header(entries, dtype)
        write_flat(folder / WEIGHTS_FILE, self._headers[dtype], flat)
        write_config(folder, self.adapter.config)
        return self._candidate(flat, str(folder))

    def _flat(self, x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """Every factor of ``x``'s adapter in one freshly allocated flat buffer (never reused)."""
        values = torch.tensor(self.singular_values(x), dtype=torch.float32)  # a copy, never a view
        flat = torch.empty(self._numel, dtype=torch.float32)
        for g in self._groups:
            s = g.s0.clone()
            s[:, : self.k] = values[g.index]  # (n, r)
            (n, rows, r), cols = g.left.shape, g.right.shape[2]
            out = flat[g.offset : g.offset + n * rows * cols].view(n, rows, cols)
            if rows <= cols:  # s scales the smaller side
                torch.bmm(g.left * s[:, None, :], g.right, out=out)
            else:
                torch.bmm(g.left, s[:, :, None] * g.right, out=out)
        return flat if dtype == torch.float32 else flat.to(dtype)

    def _candidate(self, flat: torch.Tensor, name: str) -> LoraCandidate:
        """A candidate whose factors are views into ``flat``, in module order."""
        views = [part.view(shape) for part, (_, _, shape) in
                 zip(flat.split(self._sizes), self._entries)]
        factors = {m: (views[a], views[b]) for m, a, b in self._module_parts}
        return LoraCandidate(factors, self.scale, self.adapter.config, name)

    # ---- rebuilding in another process -----------------------------------------------------

    def record(self) -> dict:
        """JSON-able description that lets another process rebuild and verify this space."""
        return {"source": str(self.adapter.path.resolve()), "sha256": self.checksum,
                "alpha_frac": self.alpha_frac, "parametrization": self.parametrization,
                "rank": self.rank, "k": self.k, "dim": self.dim,
                "modules": [m.name for m in self.adapter.modules], "summary": self.summary}

    @classmethod
    def from_record(cls, record: dict, path: str | Path | None = None) -> "SvdSpace":
        """Rebuild from `record()` (optionally from a copy of the adapter at `path`); verify it."""
        space = cls.from_folder(path or record["source"], record["alpha_frac"],
                                record["parametrization"])
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
        return (f"SvdSpace({self.adapter.path}, alpha_frac={self.alpha_frac}, "
                f"{self.parametrization}: {self.summary})")
