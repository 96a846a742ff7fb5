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


class Exploit:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("version", [1, 2])
def test_payload_referring_to_os_system_is_refused(tmp_path, version):
    import hashlib
    from population.checkpoint import _BODY_HEAD, _HEADER, MAGIC

    payload = pickle.dumps({"strategy": Exploit()})
    body = payload if version == 1 else _BODY_HEAD.pack(0, len(payload)) + payload
    header = _HEADER.pack(MAGIC, version, len(body), hashlib.sha256(body).digest())
    (tmp_path / "evil").write_bytes(header + body)
    with pytest.raises(CheckpointError, match="not allowed"):
        population.load_checkpoint(tmp_path / "evil")


def test_format_1_files_are_still_read(tmp_path):
    import hashlib
    from population.checkpoint import _HEADER, MAGIC
    s = make("cmaes-numpy")
    run(s, 2)
    payload = pickle.dumps({"strategy": s, "versions": {}}, protocol=5)  # in-band arrays
    header = _HEADER.pack(MAGIC, 1, len(payload), hashlib.sha256(payload).digest())
    (tmp_path / "v1").write_bytes(header + payload)
    back = population.load_checkpoint(tmp_path / "v1")
    assert np.array_equal(back.ask(), s.ask())


def test_loaded_arrays_are_aligned_and_writable(tmp_path):
    s = make("cmaes")  # pycma changes its arrays in place after a load
    run(s, 2)
    population.save_checkpoint(s, tmp_path / "c.ckpt")
    back = population.load_checkpoint(tmp_path / "c.ckpt")
    cov = back.es.sm.C
    assert cov.flags.writeable and cov.flags.aligned
    run(back, 2)  # in-place updates work on the loaded arrays


def test_snapshot_copies_arrays_of_strategies_that_change_them_in_place(tmp_path):
    from population.checkpoint import snapshot, write_snapshot
    s = make("cmaes")  # pycma changes some of its arrays in place
    run(s, 2)
    snap = snapshot(s)
    frozen = [bytes(b) for b in snap.buffers]
    expected = s.ask()  # what the snapshot must reproduce
    s.tell(expected, [rastrigin_reward(x) for x in expected])
    run(s, 2)
    assert [bytes(b) for b in snap.buffers] == frozen
    write_snapshot(snap, tmp_path / "late.ckpt")
    assert np.array_equal(population.load_checkpoint(tmp_path / "late.ckpt").ask(), expected)


def test_numpy_cmaes_snapshot_written_later_is_the_state_at_snapshot_time(tmp_path):
    from population.checkpoint import snapshot, write_snapshot
    s = make("cmaes-numpy")
    run(s, 3)
    snap = snapshot(s)  # zero copy: the strategy replaces its arrays instead of changing them
    expected = s.ask()
    s.tell(expected, [rastrigin_reward(x) for x in expected])
    run(s, 30)  # covariance updates, factor refreshes
    write_snapshot(snap, tmp_path / "late.ckpt")
    back = population.load_checkpoint(tmp_path / "late.ckpt")
    assert np.array_equal(back.ask(), expected)
