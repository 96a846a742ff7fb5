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


def test_payload_referring_to_os_system_is_refused(tmp_path):
    import hashlib
    from population.checkpoint import _BODY_HEAD, _HEADER, FORMAT_VERSION, MAGIC

    payload = pickle.dumps({"strategy": Exploit()})
    body = _BODY_HEAD.pack(0, len(payload)) + payload
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body), hashlib.sha256(body).digest())
    (tmp_path / "evil").write_bytes(header + body)
    with pytest.raises(CheckpointError, match="not allowed"):
        population.load_checkpoint(tmp_path / "evil")


def test_other_format_versions_are_refused_by_number(tmp_path):
    from population.checkpoint import _HEADER
    path = tmp_path / "s.ckpt"
    population.save_checkpoint(make("cmaes-numpy"), path)
    data = bytearray(path.read_bytes())
    for old in (2, 3):  # 2: its reader is gone; 3: the threaded cmaes-numpy's state
        data[8:12] = old.to_bytes(4, "little")
        path.write_bytes(bytes(data))
        for read in (population.load_checkpoint, population.shared_digests):
            with pytest.raises(CheckpointError, match=f"format {old}, this code reads only format 4"):
                read(path)
    assert _HEADER.size == 52


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
    run(s, 30)  # covariance updates, factorisations
    write_snapshot(snap, tmp_path / "late.ckpt")
    back = population.load_checkpoint(tmp_path / "late.ckpt")
    assert np.array_equal(back.ask(), expected)


def _numpy_cmaes_with_lazy_factor():
    # d = 40 with a factorisation every 6 generations: C and A stay the same objects in between
    return population.NumpyCMAES(np.linspace(-1, 1, 40), 0.5, 8, seed=2, lazy_gap_factor=6.0)


def test_shared_arrays_are_written_once_and_resume_bit_identically(tmp_path):
    expected = _numpy_cmaes_with_lazy_factor()
    run(expected, 9)
    expected = expected.ask()
    s = _numpy_cmaes_with_lazy_factor()
    arrays = population.ArrayFiles(tmp_path / population.ARRAY_DIR, min_bytes=4096)
    run(s, 7)  # past the first factorisation: C and A differ from the identity
    population.write_snapshot(population.snapshot(s), tmp_path / "a.ckpt", arrays)
    first = arrays.written
    population.write_snapshot(population.snapshot(s), tmp_path / "b.ckpt", arrays)
    assert first >= 2 and arrays.written == first  # C and A (12.8 and 6.4 kB) are shared, once
    shared = population.shared_digests(tmp_path / "a.ckpt")
    assert shared == population.shared_digests(tmp_path / "b.ckpt")
    assert {p.name for p in (tmp_path / population.ARRAY_DIR).iterdir()} == {d.hex() for d in shared}
    population.save_checkpoint(s, tmp_path / "inline.ckpt")  # no ArrayFiles: all inline
    shared_bytes = sum(p.stat().st_size for p in (tmp_path / population.ARRAY_DIR).iterdir())
    assert shared_bytes >= 40 * 40 * (8 + 4)
    assert (tmp_path / "inline.ckpt").stat().st_size - (tmp_path / "b.ckpt").stat().st_size \
        >= shared_bytes - 64 * len(shared)  # b.ckpt holds references, not the arrays
    back = population.load_checkpoint(tmp_path / "b.ckpt")
    run(back, 2)
    assert np.array_equal(back.ask(), expected)


def test_missing_or_corrupt_array_files_are_refused_by_name(tmp_path):
    s = _numpy_cmaes_with_lazy_factor()
    run(s, 2)
    arrays = population.ArrayFiles(tmp_path / population.ARRAY_DIR, min_bytes=4096)
    population.write_snapshot(population.snapshot(s), tmp_path / "s.ckpt", arrays)
    victim = sorted((tmp_path / population.ARRAY_DIR).iterdir())[0]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{victim.name}: corrupt array file"):
        population.load_checkpoint(tmp_path / "s.ckpt")
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"array file .*{victim.name} is missing"):
        population.load_checkpoint(tmp_path / "s.ckpt")


def test_retain_deletes_array_files_no_kept_checkpoint_refers_to(tmp_path):
    s = _numpy_cmaes_with_lazy_factor()
    arrays = population.ArrayFiles(tmp_path / population.ARRAY_DIR, min_bytes=4096)
    for g in range(8):  # a factorisation in between (generation 6): new C and A files
        run(s, 1)
        population.write_snapshot(population.snapshot(s), tmp_path / f"{g}.ckpt", arrays)
    (tmp_path / population.ARRAY_DIR / "leftover.tmp").write_bytes(b"x")  # a killed write
    kept = population.shared_digests(tmp_path / "7.ckpt")
    before = {p.name for p in (tmp_path / population.ARRAY_DIR).iterdir()}
    arrays.retain(kept)
    after = {p.name for p in (tmp_path / population.ARRAY_DIR).iterdir()}
    assert after == {d.hex() for d in kept} and len(before) > len(after) + 1
    back = population.load_checkpoint(tmp_path / "7.ckpt")
    assert back.generation == 8
