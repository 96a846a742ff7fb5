"""essa-train with the fake evaluator: resume determinism, stop signals, faults, -n 1, dry run."""

import json
import os
import signal
import time

import pytest

from essa.rundir import read_metrics
from essa.runtime import EXIT_FAILURE, EXIT_REQUEUE
from essa.runtime.loop import TIMING_KEYS
from tests.runtime_helpers import fake_args, launch, tiny_adapter, train_cmd


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return tiny_adapter(tmp_path_factory.mktemp("tiny") / "adapter")


def _run(n, args, env=None, timeout=120):
    proc = launch(train_cmd(n, args), env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _comparable(path):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(path)]


def _wait_for_generation(state_path, generation, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if state_path.is_file() and json.loads(state_path.read_text())["generation"] >= generation:
            return
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    raise AssertionError("no checkpoint in time")


@pytest.mark.parametrize("strategy", ["cmaes", "cmaes-numpy"])
def test_sigkill_then_resume_with_other_rank_count_equals_uninterrupted(tmp_path, adapter, strategy):
    # cmaes-numpy updates its covariance in a background thread and is checkpointed mid-update
    gens = ["--set", "search.generations=6", "--set", f"search.strategy={strategy}"]
    code, _, err = _run(1, fake_args(tmp_path, adapter, *gens, name="full"))  # mpirun -n 1
    assert code == 0, err[-3000:]
    proc = launch(train_cmd(None, fake_args(tmp_path, adapter, *gens, "--set",
                                            "runtime.fake_delay_s=0.05", name="cut")))
    _wait_for_generation(tmp_path / "cut/checkpoint/state.json", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    done = json.loads((tmp_path / "cut/checkpoint/state.json").read_text())["generation"]
    assert 2 <= done < 6
    code, _, err = _run(3, ["--resume", str(tmp_path / "cut"), "--set", "runtime.fake_delay_s=0"])
    assert code == 0, err[-3000:]
    assert f"starting at generation {done} of 6" in err
    full, cut = _comparable(tmp_path / "full/metrics.jsonl"), _comparable(tmp_path / "cut/metrics.jsonl")
    assert [r["generation"] for r in full if r["phase"] == "search"] == list(range(6))
    assert cut == full


def test_master_that_also_evaluates_with_cut_tasks_gives_the_same_run(tmp_path, adapter):
    # mpirun -n 2 with rank 0 evaluating too: two engines, the last candidates cut into single
    # prompts; per-prompt scores make the run equal to one engine scoring whole candidates.
    both = ["--set", "runtime.master_evaluates=true", "--set", "runtime.min_task_items=1",
            "--set", "runtime.fake_delay_s=0.3"]  # rank 1 starts in about 2 s
    code, _, err = _run(2, fake_args(tmp_path, adapter, *both, name="both"))
    assert code == 0, err[-3000:]
    assert "rank 0 master (also evaluating), 2 workers" in err
    assert "worker rank 0 ready" in err and "worker rank 1 ready" in err
    code, _, err = _run(None, fake_args(tmp_path, adapter, "--set", "runtime.min_task_items=0",
                                        name="whole"))
    assert code == 0, err[-3000:]
    assert _comparable(tmp_path / "both/metrics.jsonl") == _comparable(tmp_path / "whole/metrics.jsonl")


def test_workers_scoring_several_candidates_per_pass_give_the_same_run(tmp_path, adapter):
    # ESSA_FAKE_PASS=3: each worker scores up to 3 queued candidates in one "engine pass"
    code, _, err = _run(3, fake_args(tmp_path, adapter, "--set", "runtime.fake_delay_s=0.05",
                                     name="passes"), env={"ESSA_FAKE_PASS": "3"})
    assert code == 0, err[-3000:]
    code, _, err = _run(None, fake_args(tmp_path, adapter, name="single"))
    assert code == 0, err[-3000:]
    assert _comparable(tmp_path / "passes/metrics.jsonl") == _comparable(tmp_path / "single/metrics.jsonl")


def test_sigterm_checkpoints_and_exits_75_then_resume_finishes(tmp_path, adapter):
    args = fake_args(tmp_path, adapter, "--set", "search.generations=50", "--set",
                     "runtime.fake_delay_s=0.05", name="term")
    proc = launch(train_cmd(None, args))
    _wait_for_generation(tmp_path / "term/checkpoint/state.json", 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_REQUEUE, err[-3000:]
    assert "SIGTERM received" in err and "--resume" in err
    state = json.loads((tmp_path / "term/checkpoint/state.json").read_text())
    assert 1 <= state["generation"] < 50
    search = [r for r in read_metrics(tmp_path / "term/metrics.jsonl") if r["phase"] == "search"]
    assert len(search) >= state["generation"]
    code, _, err = _run(None, ["--resume", str(tmp_path / "term"), "--set", "search.generations="
                               f"{state['generation'] + 1}", "--set", "runtime.fake_delay_s=0"])
    assert code == 0, err[-3000:]
    assert (tmp_path / "term/summary.json").is_file()


def test_worker_exception_stops_job_naming_rank_candidate_and_cause(tmp_path, adapter):
    t0 = time.time()
    code, _, err = _run(3, fake_args(tmp_path, adapter), env={"ESSA_FAKE_FAULT": "raise:1:2"})
    assert code == EXIT_FAILURE and time.time() - t0 < 60
    assert "failed in generation 1, candidate 2 (c2)" in err and "injected fault" in err
    assert "worker rank 1" in err or "worker rank 2" in err


def test_hung_worker_is_stopped_by_the_task_timeout(tmp_path, adapter):
    code, _, err = _run(None, fake_args(tmp_path, adapter, "--set", "runtime.task_timeout_s=2"),
                        env={"ESSA_FAKE_FAULT": "hang:1:0"})
    assert code == EXIT_FAILURE
    assert "worker rank 1 gave no answer for candidate 0 (c0) of generation 1" in err


def test_dead_worker_ends_the_mpi_job_in_bounded_time(tmp_path, adapter):
    t0 = time.time()
    code, out, err = _run(3, fake_args(tmp_path, adapter), env={"ESSA_FAKE_FAULT": "exit:1:1"})
    assert code != 0 and time.time() - t0 < 60
    assert "RANK" in (out + err).upper()


def test_non_finite_fitness_is_a_failed_candidate(tmp_path, adapter):
    code, _, err = _run(None, fake_args(tmp_path, adapter), env={"ESSA_FAKE_FAULT": "nan:1:3"})
    assert code == 0, err[-3000:]
    search = [r for r in read_metrics(tmp_path / "fake/metrics.jsonl") if r["phase"] == "search"]
    assert [r["failed"] for r in search] == [0, 1, 0, 0]
    assert "failed 1" in err


def test_dry_run_prints_the_plan_without_loading_anything(tmp_path, adapter):
    code, out, err = _run(None, fake_args(tmp_path, adapter, "--dry-run"))
    assert code == 0, err
    assert "d = 4 modules x 2 factors x 4 = 32" in out and "6 candidates x 4 generations" in out
    assert not (tmp_path / "fake").exists()
    code, _, err = _run(None, fake_args(tmp_path, tmp_path / "missing", "--dry-run"))
    assert code == 2 and "missing" in err


def test_missing_adapter_folder_is_a_clear_error(tmp_path):
    code, _, err = _run(None, fake_args(tmp_path, tmp_path / "nope"))
    assert code == 2 and "nope" in err and "adapter" in err


def test_report_to_tensorboard_writes_events_or_names_the_missing_package(tmp_path, adapter):
    code, _, err = _run(None, fake_args(tmp_path, adapter, "--set", "runtime.report_to=[tensorboard]"))
    if code == 0:
        assert list((tmp_path / "fake/tensorboard").glob("events.*"))
    else:
        assert "tensorboard" in err and "pip install" in err


def test_new_run_over_an_existing_run_is_refused_and_leaves_it_intact(tmp_path, adapter):
    code, _, err = _run(None, fake_args(tmp_path, adapter))
    assert code == 0, err
    metrics = (tmp_path / "fake/metrics.jsonl").read_text()
    code, _, err = _run(2, fake_args(tmp_path, adapter))
    assert code == 2 and "already holds a run" in err and f"--resume {tmp_path / 'fake'}" in err
    assert (tmp_path / "fake/metrics.jsonl").read_text() == metrics
    report = (tmp_path / "fake/report.md").read_text()  # the finished run's report
    assert "| ESSA, last mean |" in report and (tmp_path / "fake/fitness.png").is_file()


def test_a_run_that_never_checkpointed_is_started_over(tmp_path, adapter):
    run_dir = tmp_path / "fake"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"generation": -1, "phase": "validation", "stale": true}\n')
    code, _, err = _run(None, fake_args(tmp_path, adapter))
    assert code == 0, err
    records = read_metrics(run_dir / "metrics.jsonl")
    assert not any(r.get("stale") for r in records)
    assert [r["generation"] for r in records if r["phase"] == "validation"] == [-1, 1, 3]


def test_checkpoint_writer_commits_in_the_background_and_reports_a_failed_write(tmp_path):
    import numpy as np
    import population
    from essa.runtime.state import CheckpointWriter, load_run_state
    s = population.make_strategy("cmaes-numpy", np.zeros(20), 0.3, 8, seed=0)
    writer = CheckpointWriter(tmp_path)
    for g in range(3):
        X = s.ask()
        s.tell(X, -np.sum(X**2, axis=1))
        writer.save(s, {"generation": g + 1, "tokens": g})
    expected = s.ask()
    writer.wait()
    back, state = load_run_state(tmp_path)
    assert state["generation"] == 3 and state["strategy_file"] == "strategy-3.ckpt"
    assert np.array_equal(back.ask(), expected)
    kept = sorted(p.name for p in (tmp_path / "checkpoint").glob("*.ckpt"))
    assert kept[-1] == "strategy-3.ckpt" and len(kept) <= 2  # generation 2 may have been skipped
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    broken = CheckpointWriter(blocked)
    broken.save(s, {"generation": 4})
    with pytest.raises(OSError):
        broken.wait()
    broken.wait()  # the error is reported once


def test_checkpoint_writer_shares_unchanged_arrays_and_keeps_only_referenced_files(tmp_path):
    """Covariance and factor are written once per refresh, not per generation; after each
    commit the array folder holds exactly what the two kept strategy files refer to."""
    import numpy as np
    import population
    from essa.runtime.state import CHECKPOINT_DIR, CheckpointWriter, load_run_state
    s = population.NumpyCMAES(np.linspace(-1, 1, 40), 0.5, 8, seed=3, lazy_gap_factor=6.0)
    writer = CheckpointWriter(tmp_path)
    writer.arrays.min_bytes = 4096  # C and A of d = 40 (12.8 kB) go to shared files
    refreshes = set()
    for g in range(12):  # a refresh every 6 generations
        X = s.ask()
        s.tell(X, -np.sum(X**2, axis=1))
        writer.save(s, {"generation": g + 1})
        writer.wait()
        refreshes.add(s.factor_generation)
    expected = s.ask()
    refreshes.discard(0)
    # identity C (float64) and A (float32), then a new C and A at each refresh only
    assert len(refreshes) >= 1 and 4 <= writer.arrays.written <= 2 + 2 * len(refreshes)
    folder = tmp_path / CHECKPOINT_DIR
    kept = sorted(folder.glob("strategy-*.ckpt"))
    assert [p.name for p in kept] == ["strategy-11.ckpt", "strategy-12.ckpt"]
    referenced = set().union(*(population.shared_digests(p) for p in kept))
    assert {p.name for p in (folder / population.ARRAY_DIR).iterdir()} == {d.hex() for d in referenced}
    back, state = load_run_state(tmp_path)
    assert state["generation"] == 12 and np.array_equal(back.ask(), expected)


def test_checkpoint_writer_skips_to_the_newest_state_when_the_disk_is_slow(tmp_path, monkeypatch):
    """A save arriving while a write runs replaces the one still waiting: the run never waits for
    the disk, the writer never falls more than one state behind, and wait() commits the newest."""
    import threading
    import numpy as np
    import population
    from essa.runtime import state as state_mod
    from essa.runtime.state import CheckpointWriter, load_run_state
    written, release = [], threading.Event()
    real_commit = state_mod._commit

    def slow_commit(run_dir, snap, st, arrays):
        written.append(st["generation"])
        if st["generation"] == 1:
            release.wait(10)  # the first write is still running while 2, 3 and 4 arrive
        real_commit(run_dir, snap, st, arrays)

    monkeypatch.setattr(state_mod, "_commit", slow_commit)
    s = population.make_strategy("cmaes-numpy", np.zeros(10), 0.3, 6, seed=1)
    writer = CheckpointWriter(tmp_path)
    for g in range(4):
        X = s.ask()
        s.tell(X, -np.sum(X**2, axis=1))
        writer.save(s, {"generation": g + 1})  # returns at once although generation 1 blocks
    expected = s.ask()
    release.set()
    writer.wait()
    assert written == [1, 4] and writer.skipped == 2
    back, st = load_run_state(tmp_path)
    assert st["generation"] == 4 and np.array_equal(back.ask(), expected)
