"""The layout of the search vector: which coordinates are which singular values.

The vector is module by module in the adapter's sorted order (layer, then module name); inside a
module, first the top-k singular values of lora_A, then those of lora_B, each in descending order
of the source values. d = n_modules * 2 * k with k = floor(alpha_frac * r).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from essa.adapters.peft_io import LoraModule

FACTORS = ("A", "B")
# floor(alpha_frac * r) with a tolerance: 0.29 * 100 is 28.999999999999996 in floating point.
_FLOOR_EPS = 1e-9


@dataclass(frozen=True)
class Slice:
    """Coordinates [start, stop) of the vector: top singular values of one factor of one module."""

    start: int
    stop: int
    module: LoraModule
    factor: str  # "A" or "B"


def searched_count(rank: int, alpha_frac: float) -> int:
    """k = floor(alpha_frac * r), the singular values searched per factor; errors if it is 0."""
    if not 0.0 < alpha_frac <= 1.0:
        raise ValueError(f"alpha_frac must be in (0, 1], got {alpha_frac}")
    k = math.floor(alpha_frac * rank + _FLOOR_EPS)
    if k < 1:
        raise ValueError(
            f"alpha_frac * r = {alpha_frac} * {rank} = {alpha_frac * rank:g} < 1: "
            f"no singular value would be searched; use alpha_frac >= {1 / rank:g} for rank {rank}")
    return k


def search_dim(n_modules: int, rank: int, alpha_frac: float) -> int:
    """d = n_modules * 2 factors * floor(alpha_frac * r)."""
    return n_modules * len(FACTORS) * searched_count(rank, alpha_frac)


def build_layout(modules: tuple[LoraModule, ...], k: int) -> list[Slice]:
    """One slice of k coordinates per (module, factor), contiguous, in module order, A before B."""
    slices, start = [], 0
    for module in modules:
        for factor in FACTORS:
            slices.append(Slice(start, start + k, module, factor))
            start += k
    return slices


def summarize(modules: tuple[LoraModule, ...], k: int) -> str:
    """Human-readable dimension, e.g. 'd = 1,920 = 30 layers x 4 modules x 2 factors x 8 values'."""
    d = len(modules) * len(FACTORS) * k
    kinds = sorted({m.kind for m in modules})
    by_layer: dict[int | None, set[str]] = {}
    for m in modules:
        by_layer.setdefault(m.layer, set()).add(m.kind)
    # "L layers x M modules" only when every layer carries the same M module kinds.
    uniform = (None not in by_layer and len(modules) == len(by_layer) * len(kinds)
               and all(found == set(kinds) for found in by_layer.values()))
    if uniform:
        shape = f"{len(by_layer)} layers x {len(kinds)} modules"
    else:
        shape = f"{len(modules)} modules"
    return (f"d = {d:,} = {shape} x {len(FACTORS)} factors x {k} values "
            f"(modules: {', '.join(kinds)})")
