"""Turn singular values back into LoRA factors, batched over modules of the same shape.

Every factor F = U diag(s) Vᵀ has frozen U, V; a candidate only changes s. Factors with the same
kind and shape (all lora_A of q/k/v/o are (r, hidden); lora_B splits by out_features) are stacked
once, so one candidate costs a handful of batched matmuls writing into one flat float32 buffer,
which is also the byte layout of the candidate's safetensors file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FactorSVD:
    """A frozen decomposition of one factor: F = u @ diag(s) @ vt, in float64."""

    key: str  # safetensors key of the factor
    u: torch.Tensor  # (rows, r)
    s: torch.Tensor  # (r,) descending
    vt: torch.Tensor  # (r, cols)
    start: int  # first coordinate of this factor's searched values in the vector


@dataclass(frozen=True)
class _Group:
    """Same-shaped factors stacked for one batched matmul."""

    keys: tuple[str, ...]
    left: torch.Tensor  # (n, rows, r) float32
    right: torch.Tensor  # (n, r, cols) float32
    scale_left: bool  # multiply s into the smaller of left/right
    s0: torch.Tensor  # (n, r) float32 source singular values (the non-searched ones stay)
    index: torch.Tensor  # (n, k) int64: vector coordinates of the searched values
    offset: int  # element offset in the flat buffer
    shape: tuple[int, int]  # (rows, cols) of each factor


class Materializer:
    """Precomputed float32 stacks of U and V; maps a vector to fresh LoRA tensors."""

    def __init__(self, factors: list[FactorSVD], k: int, dim: int):
        self.k, self.dim = k, dim
        by_shape: dict[tuple[int, int], list[FactorSVD]] = {}
        for f in factors:
            by_shape.setdefault((f.u.shape[0], f.vt.shape[1]), []).append(f)
        self.groups: list[_Group] = []
        offset = 0
        for shape, members in by_shape.items():
            self.groups.append(_stack(members, k, offset, shape))
            offset += len(members) * shape[0] * shape[1]
        self.numel = offset
        # (key, element offset, shape) of every tensor in the flat buffer, in buffer order.
        self.entries = [(key, g.offset + i * g.shape[0] * g.shape[1], g.shape)
                        for g in self.groups for i, key in enumerate(g.keys)]

    def flat(self, vector: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """All factors of a candidate in one freshly allocated flat buffer (never reused)."""
        v = self._check(vector)
        flat = torch.empty(self.numel, dtype=torch.float32)
        for g in self.groups:
            s = g.s0.clone()
            s[:, : self.k] = v[g.index]  # (n, r)
            n, (rows, cols) = len(g.keys), g.shape
            out = flat[g.offset : g.offset + n * rows * cols].view(n, rows, cols)
            if g.scale_left:
                torch.bmm(g.left * s[:, None, :], g.right, out=out)
            else:
                torch.bmm(g.left, s[:, :, None] * g.right, out=out)
        return flat if dtype == torch.float32 else flat.to(dtype)

    def tensors(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-key views into a flat buffer: (r, in) for lora_A, (out, r) for lora_B."""
        return {key: flat[off : off + shape[0] * shape[1]].view(shape)
                for key, off, shape in self.entries}

    def _check(self, vector: np.ndarray) -> torch.Tensor:
        arr = np.asarray(vector)
        if arr.shape != (self.dim,):
            raise ValueError(f"vector has shape {arr.shape}, the search space needs ({self.dim},)")
        if not np.all(np.isfinite(arr)):
            raise ValueError("vector has non-finite values")
        # A copy: the caller's array may be read-only (an MPI buffer) or strided (a matrix row).
        return torch.tensor(arr, dtype=torch.float32)


def _stack(members: list[FactorSVD], k: int, offset: int, shape: tuple[int, int]) -> _Group:
    """Stack U and V of same-shaped factors in float32; s scales the smaller side at run time."""
    left = torch.stack([f.u for f in members]).float()  # (n, rows, r)
    right = torch.stack([f.vt for f in members]).float()  # (n, r, cols)
    s0 = torch.stack([f.s for f in members]).float()  # (n, r)
    index = torch.stack([torch.arange(f.start, f.start + k) for f in members])  # (n, k)
    return _Group(tuple(f.key for f in members), left.contiguous(), right.contiguous(),
                  shape[0] <= shape[1], s0, index, offset, shape)
