"""Constants and shared steps of the own numpy CMA-ES (full and separable).

Parameters follow Hansen, "The CMA Evolution Strategy: A Tutorial" (arXiv:1604.00772, Table 1,
with active CMA's negative weights) and, for the separable variant, pycma's ``c1_sep``,
``cmu_sep`` and ``cc_sep`` (Ros & Hansen 2008), so both behave like pycma's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from population.bounds import clip_to_bounds


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


def advance(s, z_mean: np.ndarray, y_mean: np.ndarray) -> float:
    """Move the mean (clipped into the bounds), both paths and sigma of CMA strategy ``s``:
    eqs. (41)-(45). ``z_mean`` is C^{-1/2} (or A^{-1}) times the weighted mean step ``y_mean``.
    Returns h_sigma of eq. (45), for the covariance update."""
    p = s.params
    s._mean = s._mean + s._sigma * y_mean  # eq. (41), learning rate c_m = 1
    s.p_sigma = (1 - p.cs) * s.p_sigma + np.sqrt(p.cs * (2 - p.cs) * p.mueff) * z_mean  # (43)
    # h_sigma, eq. (45): stall the rank-one path while ||p_sigma|| is large
    norm = np.linalg.norm(s.p_sigma) / np.sqrt(1 - (1 - p.cs) ** (2 * (s.generation + 1)))
    h_sigma = 1.0 if norm < (1.4 + 2 / (p.dim + 1)) * p.chi_n else 0.0
    s.p_c = (1 - p.cc) * s.p_c + h_sigma * np.sqrt(p.cc * (2 - p.cc) * p.mueff) * y_mean
    s._sigma = float(s._sigma * np.exp(min(1.0, (p.cs / p.damps)  # eq. (44)
                                           * (np.linalg.norm(s.p_sigma) / p.chi_n - 1))))
    s._mean = clip_to_bounds(s._mean, s.bounds)
    return h_sigma


def cov_update_terms(z_sq_norms: np.ndarray, h_sigma: float, p: CMAParams):
    """(factor on the old C, weights w°_i) of eqs. (47) and (46): the decay includes the h_sigma
    correction delta(h_sigma); the negative weights are rescaled by dim / ||C^{-1/2} y_i||^2
    (``z_sq_norms`` in sorted order)."""
    w = p.weights.copy()
    neg = w < 0
    w[neg] *= p.dim / np.maximum(z_sq_norms[neg], 1e-300)
    delta = (1 - h_sigma) * p.cc * (2 - p.cc)
    return 1 + p.c1 * delta - p.c1 - p.cmu * p.weights.sum(), w


def stop_conditions(s, diag_c: np.ndarray, ill_conditioned: bool) -> dict:
    """pycma's ``tolx`` (sigma * sqrt(C_ii) and sigma * p_c all below ``s.tolx``) and
    ``conditioncov`` (``ill_conditioned``: cond(C) is above 1e14) for CMA strategy ``s``."""
    triggered = {}
    if s._sigma * np.sqrt(diag_c.max()) < s.tolx and s._sigma * np.abs(s.p_c).max() < s.tolx:
        triggered["tolx"] = s.tolx
    if ill_conditioned:
        triggered["conditioncov"] = 1e14
    return triggered
