"""Constants and shared steps of the own numpy CMA-ES (full and separable).

Parameters follow Hansen, "The CMA Evolution Strategy: A Tutorial" (arXiv:1604.00772, Table 1,
with active CMA's negative weights) and, for the separable variant, pycma's ``c1_sep``,
``cmu_sep`` and ``cc_sep`` (Ros & Hansen 2008), so both behave like pycma's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CMAParams:
    """Constants of one CMA-ES run, computed once from (dim, popsize, separable)."""

    dim: int
    popsize: int
    mu: int
    weights: np.ndarray  # (popsize,) positive for the mu best, negative for the rest
    mueff: float
    cc: float
    cs: float
    c1: float
    cmu: float
    damps: float
    chi_n: float  # E||N(0, I)||

    @property
    def cm(self) -> float:
        """Learning rate of the mean (1 in the tutorial)."""
        return 1.0


def make_params(dim: int, popsize: int, separable: bool) -> CMAParams:
    """Tutorial Table 1 (full) or pycma's separable learning rates (``separable=True``)."""
    n, lam = float(dim), int(popsize)
    mu = lam // 2
    raw = np.log((lam + 1) / 2) - np.log(np.arange(1, lam + 1))  # w'_i, eq. (49)
    positive, negative = raw[:mu], raw[mu:]
    mueff = positive.sum() ** 2 / (positive**2).sum()
    mueff_neg = negative.sum() ** 2 / (negative**2).sum() if negative.size else 0.0
    cs = (mueff + 2) / (n + mueff + 5)
    damps = 1 + 2 * max(0.0, np.sqrt((mueff - 1) / (n + 1)) - 1) + cs
    if separable:
        cc = (1 + 1 / n + mueff / n) / (np.sqrt(n) + 1 / n + 2 * mueff / n)
        c1 = 1 / (n + 2 * np.sqrt(n) + mueff / n)
        cmu = min(1 - c1, (0.25 + mueff + 1 / mueff - 2) / (n + 4 * np.sqrt(n) + mueff / 2))
    else:
        cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
        c1 = 2 / ((n + 1.3) ** 2 + mueff)
        cmu = min(1 - c1, 2 * (0.25 + mueff + 1 / mueff - 2) / ((n + 2) ** 2 + mueff))
    # Negative weights (active CMA), eq. (53): bounded so that C stays positive definite.
    alpha_mu = 1 + c1 / cmu
    alpha_mueff = 1 + 2 * mueff_neg / (mueff + 2)
    alpha_posdef = (1 - c1 - cmu) / (n * cmu)
    neg_scale = min(alpha_mu, alpha_mueff) if separable else min(alpha_mu, alpha_mueff,
                                                                  alpha_posdef)
    weights = np.concatenate([positive / positive.sum(),
                              neg_scale * negative / np.abs(negative).sum()])
    chi_n = np.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))
    return CMAParams(dim, lam, mu, weights, float(mueff), float(cc), float(cs), float(c1),
                     float(cmu), float(damps), float(chi_n))


def update_sigma_path(p_sigma: np.ndarray, z_mean: np.ndarray, p: CMAParams) -> np.ndarray:
    """Cumulation for step-size control, eq. (43): z_mean is C^{-1/2} times the mean step."""
    return (1 - p.cs) * p_sigma + np.sqrt(p.cs * (2 - p.cs) * p.mueff) * z_mean


def update_sigma(sigma: float, p_sigma: np.ndarray, p: CMAParams) -> float:
    """Cumulative step-size adaptation, eq. (44)."""
    return float(sigma * np.exp(min(1.0, (p.cs / p.damps)
                                    * (np.linalg.norm(p_sigma) / p.chi_n - 1))))


def stall_indicator(p_sigma: np.ndarray, generation: int, p: CMAParams) -> float:
    """h_sigma of eq. (45): 0 stalls the rank-one path while ||p_sigma|| is large."""
    norm = np.linalg.norm(p_sigma) / np.sqrt(1 - (1 - p.cs) ** (2 * (generation + 1)))
    return 1.0 if norm < (1.4 + 2 / (p.dim + 1)) * p.chi_n else 0.0


def update_cov_path(p_c: np.ndarray, y_mean: np.ndarray, h_sigma: float,
                    p: CMAParams) -> np.ndarray:
    """Cumulation for the rank-one update, eq. (45)."""
    return (1 - p.cc) * p_c + h_sigma * np.sqrt(p.cc * (2 - p.cc) * p.mueff) * y_mean


def active_weights(z_sq_norms: np.ndarray, p: CMAParams) -> np.ndarray:
    """w°_i of eq. (46): negative weights rescaled by dim / ||C^{-1/2} y_i||^2 (sorted order)."""
    w = p.weights.copy()
    neg = w < 0
    w[neg] *= p.dim / np.maximum(z_sq_norms[neg], 1e-300)
    return w


def cov_decay(h_sigma: float, p: CMAParams) -> float:
    """Factor on the old C in eq. (47), with the h_sigma correction delta(h_sigma)."""
    delta = (1 - h_sigma) * p.cc * (2 - p.cc)
    return 1 + p.c1 * delta - p.c1 - p.cmu * p.weights.sum()
