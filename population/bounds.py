"""Per-coordinate box bounds, normalized once so that strategies see plain arrays.

The own strategies clip the candidates into the box, update with the unclipped samples and clip
the mean after each update; pycma uses its own ``BoundTransform``.
"""

from __future__ import annotations

import numpy as np

Bounds = tuple[np.ndarray, np.ndarray]
"""``(lower (d,), upper (d,))`` float64; ``-inf`` / ``+inf`` where a side is open."""


def _side(value, dim: int, fill: float) -> np.ndarray:
    if value is None:
        return np.full(dim, fill)
    side = np.broadcast_to(np.asarray(value, dtype=np.float64), (dim,)).copy()
    side[np.isnan(side)] = fill  # a NaN entry means "no bound on this coordinate"
    return side


def normalize_bounds(bounds, dim: int) -> Bounds | None:
    """Turn ``None`` or ``(lower, upper)`` (scalars, sequences or ``None``) into arrays.

    Returns ``None`` when no coordinate is bounded. Raises ``ValueError`` when a lower bound
    is not strictly below its upper bound.
    """
    if bounds is None:
        return None
    if len(bounds) != 2:
        raise ValueError("bounds must be (lower, upper)")
    lower = _side(bounds[0], dim, -np.inf)
    upper = _side(bounds[1], dim, np.inf)
    if np.any(lower >= upper):
        raise ValueError("every lower bound must be strictly below its upper bound")
    if np.all(np.isinf(lower)) and np.all(np.isinf(upper)):
        return None
    return lower, upper


def clip_to_bounds(x: np.ndarray, bounds: Bounds | None) -> np.ndarray:
    """Clip rows of ``x`` (..., d) into the box; identity when ``bounds`` is ``None``."""
    if bounds is None:
        return x
    return np.clip(x, bounds[0], bounds[1])
