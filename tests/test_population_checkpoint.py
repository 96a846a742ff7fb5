"""Exact checkpoints: bit-identical resume in a fresh process, refusal of bad files."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import population
from population.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cmaes", "sep-cmaes", "cmaes-numpy", "sep-cmaes-numpy", "openai-es"]


def rastrigin_reward(x):
    return -float(np.sum(x**2 - 10 * np.cos(2 * np.pi * x)) + 10 * x.size)


def run(strategy, generations):
    for _ in range(generations):
        X = strategy.ask()
        strategy.tell(X, [rastrigin_reward(x) for x in X])


def make(name):
    return population.make_strategy(name, np.linspace(-1, 1, 12), 0.7, 8, seed=5)


RESUME_SCRIPT = """
import sys, numpy as np, population
from tests.test_population_checkpoint import run, rastrigin_reward
s = population.load_checkpoint(sys.argv[1])
np.random.seed(123); np.random.rand(7)  # foreign use of the global generator
run(s, 3)
np.save(sys.argv[2], np.concatenate([s.ask().ravel(), s.mean, [s.sigma, s.best_fitness,
        s.generation]]))
"""


@pytest.mark.parametrize("name", NAMES)
def test_resume_in_fresh_process_is_bit_identical(name, tmp_path):
    uninterrupted = make(name)
    run(uninterrupted, 7)
    expected = np.concatenate([uninterrupted.ask().ravel(), uninterrupted.mean,
                               [uninterrupted.sigma, uninterrupted.best_fitness,
                                uninterrupted.generation]])
    first_part = make(name)
    run(first_part, 4)
    population.save_checkpoint(first_part, tmp_path / "s.ckpt")
    out = tmp_path / "resumed.npy"
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "s.ckpt"), str(out)],
                   cwd=ROOT, check=True)
    assert np.array_equal(np.load(out), expected)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    s = make("cmaes")
    population.save_checkpoint(s, tmp_path / "s.ckpt")
    population.save_checkpoint(s, tmp_path / "s.ckpt")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ckpt"]


def test_truncated_foreign_and_corrupt_files_are_refused(tmp_path):
    path = tmp_path / "s.ckpt"
    population.save_checkpoint(make("cmaes-numpy"), path)
    data = path.read_bytes()
    (tmp_path / "short").write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        population.load_checkpoint(tmp_path / "short")
    (tmp_path / "foreign").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="magic"):
        population.load_checkpoint(tmp_path / "foreign")
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    (tmp_path / "corrupt").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        population.load_checkpoint(tmp_path / "corrupt")


def test_payload_referring_to_os_system_is_refused(tmp_path):
    import hashlib
    from population.checkpoint import _HEADER, FORMAT_VERSION, MAGIC

    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))

    payload = pickle.dumps({"strategy": Exploit()})
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    (tmp_path / "evil").write_bytes(header + payload)
    with pytest.raises(CheckpointError, match="not allowed"):
        population.load_checkpoint(tmp_path / "evil")
