"""Noise-aware options of every strategy (#21): mirrored sampling, the mean's learning rate,
their checkpoints, and ``split_budget``."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import population
from population import cma_params

ROOT = Path(__file__).resolve().parents[1]
ALL_NAMES = ["cmaes", "sep-cmaes", "cmaes-numpy", "sep-cmaes-numpy", "openai-es"]
CMA_NAMES = ["cmaes", "sep-cmaes", "cmaes-numpy", "sep-cmaes-numpy"]
# The commit before the options existed: its strategies are the reference for "unchanged".
BEFORE = "374be90"


def reward(X):
    return [-float(np.sum(x**2 - np.cos(3 * x))) for x in X]


def make(name, mirrored=None, mean_lr=None, dim=9, popsize=8, **extra):
    options = dict(extra)
    if mirrored is not None:
        options["mirrored"] = mirrored
    if mean_lr is not None:
        options["mean_lr"] = mean_lr
    return population.make_strategy(name, np.linspace(-1, 1, dim), 0.4, popsize, seed=13,
                                     **options)


def trajectory(s, generations):
    out = []
    for _ in range(generations):
        X = s.ask()
        s.tell(X, reward(X))
        out.append(X)
    return np.stack(out)


@pytest.mark.parametrize("name, extra", [(n, {}) for n in ALL_NAMES]
                         + [("sep-cmaes-numpy", {"isotropic": True})])
def test_mirrored_pairs_are_exact_mirrors_around_the_mean(name, extra):
    s = make(name, mirrored=True, **extra)
    half = s.popsize // 2
    for _ in range(8):
        m, X = s.mean, s.ask()
        steps = X - m
        assert np.allclose(steps[:half], -steps[half:], rtol=0, atol=1e-12 * s.sigma)
        assert np.all(np.abs(steps[:half]).max(axis=1) > 1e-3 * s.sigma)  # not the mean
        assert len({row.tobytes() for row in X[:half]}) == half  # independent directions
        s.tell(X, reward(X))
    if name != "openai-es":  # the same check fails without the option
        plain, half = make(name, mirrored=False, **extra), s.popsize // 2
        X = plain.ask() - plain.mean
        assert not np.allclose(X[:half], -X[half:], rtol=0, atol=1e-3)


def test_mirrored_cmaes_numpy_mirrors_under_a_learned_covariance():
    # d = 6, lambda = 8: lazy_gap < 1, C is factored for every generation
    s = population.NumpyCMAES(np.linspace(-1, 1, 6), 0.5, 8, seed=2, mirrored=True)
    trajectory(s, 12)
    assert not np.allclose(s.factor, np.eye(6, dtype=np.float32), atol=1e-2)  # C learned
    m, X = s.mean, s.ask()
    assert np.allclose(X[:4] - m, m - X[4:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_explicit_defaults_change_nothing(name):
    expected = trajectory(make(name), 6)
    mirrored = name == "openai-es"  # openai-es is mirrored either way
    assert np.array_equal(trajectory(make(name, mirrored=mirrored, mean_lr=1.0), 6), expected)
    assert not np.array_equal(trajectory(make(name, mean_lr=0.5), 6), expected)


OLD_TRAJECTORIES = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import population
assert population.__file__.startswith(sys.argv[1]), population.__file__
from tests_noise_reference import make, trajectory, ALL_NAMES
np.savez(sys.argv[2], **{n: trajectory(make(n), 6) for n in ALL_NAMES})
"""


def test_defaults_are_bit_identical_to_the_strategies_before_the_options(tmp_path):
    """The code of commit BEFORE, run in a fresh process, proposes the same bits."""
    listing = subprocess.run(["git", "ls-tree", "--name-only", BEFORE, "population/"],
                             cwd=ROOT, capture_output=True, text=True)
    if listing.returncode:
        pytest.skip(f"commit {BEFORE} is not in this checkout")
    (tmp_path / "population").mkdir()
    for path in listing.stdout.split():
        source = subprocess.run(["git", "show", f"{BEFORE}:{path}"], cwd=ROOT, check=True,
                                capture_output=True).stdout
        (tmp_path / path).write_bytes(source)
    helpers = Path(__file__).read_text().split("@pytest.mark.parametrize")[0]
    (tmp_path / "tests_noise_reference.py").write_text(helpers)
    out = tmp_path / "old.npz"
    subprocess.run([sys.executable, "-c", OLD_TRAJECTORIES, str(tmp_path), str(out)],
                   cwd=tmp_path, check=True)
    old = np.load(out)
    for name in ALL_NAMES:
        assert np.array_equal(trajectory(make(name, mirrored=name == "openai-es",
                                              mean_lr=1.0), 6), old[name]), name


@pytest.mark.parametrize("name", ALL_NAMES + ["sep-cmaes-numpy isotropic"])
@pytest.mark.parametrize("mirrored", [False, True])
def test_mean_lr_moves_the_mean_that_share_of_the_first_step(name, mirrored):
    name, *flag = name.split()
    extra = {"isotropic": True} if flag else {}
    full, damped = (make(name, mirrored=mirrored, mean_lr=lr, **extra) for lr in (1.0, 0.3))
    m0 = full.mean
    X = full.ask()
    assert np.array_equal(damped.ask(), X)
    fitness = reward(X)
    full.tell(X, fitness)
    damped.tell(X, fitness)
    assert np.allclose(damped.mean - m0, 0.3 * (full.mean - m0), rtol=0, atol=1e-12)
    assert np.linalg.norm(full.mean - m0) > 1e-3
    if name != "openai-es":
        # the formula: m + c_m (sum_i w_i x_{i:lambda} - m), positive weights of Table 1
        p = cma_params.make_params(full.dim, full.popsize, separable=False)
        best_first = X[np.argsort(-np.asarray(fitness), kind="stable")]
        recombined = p.weights[:p.mu] @ best_first[:p.mu]
        # (sep-cmaes-numpy samples with a float32 scale, the update uses float64 sigma)
        assert np.allclose(damped.mean, m0 + 0.3 * (recombined - m0), rtol=0, atol=1e-7)
        # the paths see (m_new - m_old) / (c_m sigma): the step size moves as with c_m = 1
        assert damped.sigma == pytest.approx(full.sigma, rel=1e-12)


@pytest.mark.parametrize("name", ALL_NAMES + ["sep-cmaes-numpy isotropic"])
@pytest.mark.parametrize("mirrored, mean_lr", [(False, 1.0), (True, 1.0), (False, 0.5),
                                               (True, 0.5)])
def test_resume_with_the_options_is_bit_exact(name, mirrored, mean_lr, tmp_path):
    name, *flag = name.split()
    extra = {"isotropic": True} if flag else {}
    expected = trajectory(make(name, mirrored, mean_lr, **extra), 7)
    first = make(name, mirrored, mean_lr, **extra)
    assert np.array_equal(trajectory(first, 4), expected[:4])
    population.save_checkpoint(first, tmp_path / "s.ckpt")
    resumed = population.load_checkpoint(tmp_path / "s.ckpt")
    assert resumed.mirrored == (mirrored or name == "openai-es")
    assert resumed.mean_lr == mean_lr
    assert np.array_equal(trajectory(resumed, 3), expected[4:])


@pytest.mark.parametrize("name", ALL_NAMES)
def test_pickles_from_before_the_options_load_with_the_old_behaviour(name):
    expected = trajectory(make(name), 5)
    old = make(name)
    trajectory(old, 2)
    for attribute in ("mirrored", "mean_lr", "isotropic"):  # what an old pickle lacks
        old.__dict__.pop(attribute, None)
    loaded = pickle.loads(pickle.dumps(old))
    assert "mean_lr" not in loaded.__dict__
    assert loaded.mean_lr == 1.0 and loaded.mirrored == (name == "openai-es")
    assert np.array_equal(trajectory(loaded, 3), expected[2:])


@pytest.mark.parametrize("name", ALL_NAMES)
def test_odd_popsize_is_refused_when_mirrored(name):
    with pytest.raises(ValueError, match="even popsize"):
        make(name, mirrored=True, popsize=7)
    if name != "openai-es":
        assert make(name, mirrored=False, popsize=7).ask().shape == (7, 9)


@pytest.mark.parametrize("mean_lr", [0.0, -0.5, 1.5, float("nan")])
def test_mean_lr_outside_0_1_is_refused(mean_lr):
    with pytest.raises(ValueError, match="mean_lr"):
        make("cmaes-numpy", mean_lr=mean_lr)


def test_pycma_options_cannot_contradict_the_noise_options():
    with pytest.raises(ValueError, match="CMA_cmean"):
        make("cmaes", mean_lr=0.5, CMA_cmean=0.7)


def test_pycma_mirrored_with_bounds_stays_inside_and_tells_its_genotypes():
    s = population.make_strategy("cmaes", np.full(5, 0.8), 0.5, 8, seed=3,
                                 bounds=(-1.0, 1.0), mirrored=True)
    for _ in range(30):
        X = s.ask()
        assert np.all((X >= -1) & (X <= 1))
        s.tell(X, [-float(np.sum((x - 1) ** 2)) for x in X])  # optimum on the bound
    assert np.all(s.mean > 0.9) and s.best_fitness > -0.05


def test_isotropic_sep_cmaes_keeps_c_at_identity_and_adapts_sigma():
    s = population.NumpySepCMAES(np.full(20, 3.0), 0.1, 10, seed=1, isotropic=True)
    trajectory(s, 30)
    assert np.array_equal(s.diag_c, np.ones(20))
    assert s.sigma > 0.2  # far from the optimum on a slope: CSA grows sigma
    sep = population.NumpySepCMAES(np.full(20, 3.0), 0.1, 10, seed=1)
    trajectory(sep, 30)
    assert not np.array_equal(sep.diag_c, np.ones(20))


@pytest.mark.parametrize("mirrored", [False, True])
def test_split_budget_properties(mirrored):
    previous = 0
    for evaluations in range(1, 3000):
        popsize, per_candidate = population.split_budget(evaluations, mirrored)
        assert popsize >= 4 and per_candidate >= 1
        assert not mirrored or popsize % 2 == 0
        if evaluations >= 4:
            assert popsize * per_candidate <= evaluations
            # the budget is used: one more prompt per candidate would overspend it
            assert popsize * (per_candidate + 1) > evaluations
        assert popsize >= previous  # more budget never means fewer candidates
        previous = popsize
    with pytest.raises(ValueError):
        population.split_budget(0, mirrored)


def test_split_budget_follows_the_measured_rule():
    # benchmarks/RESULTS.md, "Noisy search benchmark (#21)": inside the measured plateaus
    assert population.split_budget(96, True) == (10, 9)
    assert population.split_budget(384, True) == (14, 27)
    assert population.split_budget(384, False) == (15, 25)
    assert population.split_budget(1536, True) == (24, 64)
    assert population.split_budget(10, True) == (4, 2)  # the floor of 4 candidates
