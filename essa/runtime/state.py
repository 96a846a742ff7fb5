"""Run checkpoints: the strategy (population.save_checkpoint) plus a small JSON that commits it.

    checkpoint/strategy-<g>.ckpt   the strategy after generation g (bit-exact resume)
    checkpoint/arrays/<sha256>     its large arrays, each written once and shared by the strategy
                                   files that hold the same array
    checkpoint/state.json          {"generation": g, "strategy_file": ..., best so far, totals}

state.json is written last and atomically: it is the commit point. A kill between the writes
leaves the previous state.json naming the previous (kept) strategy file, whose array files are
deleted only after a later commit no longer keeps it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import population
from essa.atomic import atomic_write
from essa.rundir import read_metrics

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
KEEP = 2  # strategy files kept: the committed one and the one before


def check_new_run(run_dir: Path) -> None:
    """A new run must not overwrite a resumable or finished run in ``run_dir`` (one that never
    committed a generation holds nothing to resume: the new run starts it over)."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT_DIR / STATE_FILE).is_file() or (run_dir / "summary.json").is_file():
        raise FileExistsError(f"run directory {run_dir} already holds a run: continue it with "
                              f"--resume {run_dir}, or start a new one with --set name=OTHER")


def _commit(run_dir: Path, snap, state: dict, arrays) -> None:
    """Write the new arrays and the strategy file, then state.json naming it (the commit), then
    drop old strategy files and the array files no kept one refers to."""
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(exist_ok=True)
    name = f"strategy-{state['generation']}.ckpt"
    population.write_snapshot(snap, folder / name, arrays)
    atomic_write(folder / STATE_FILE, json.dumps({**state, "strategy_file": name}, indent=1))
    files = sorted(folder.glob("strategy-*.ckpt"), key=lambda p: int(p.stem.split("-")[1]))
    for old in files[:-KEEP]:
        old.unlink()
    arrays.retain(set().union(*(population.shared_digests(p) for p in files[-KEEP:])))


class CheckpointWriter:
    """Saves run states in a thread while the next generation runs (docs/runtime.md): ``save``
    snapshots and returns at once, replacing a save still waiting (``skipped``); ``wait`` blocks
    until the newest is committed; both re-raise a failed write's error. Not a daemon thread."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.skipped = 0  # states replaced by a newer one before they were written
        self.arrays = population.ArrayFiles(self.run_dir / CHECKPOINT_DIR / population.ARRAY_DIR)
        self._lock = threading.Lock()
        self._pending: tuple | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, strategy, state: dict) -> None:
        self._raise_error()
        frozen = json.loads(json.dumps(state))  # the run's dict changes while this is written
        job = (population.snapshot(strategy), frozen)
        with self._lock:
            self.skipped += self._pending is not None
            self._pending = job
            if self._thread is not None:
                return  # the running writer takes it when it finishes its current write
            self._thread = threading.Thread(target=self._drain, name="essa-checkpoint")
            thread = self._thread
        thread.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                job, self._pending = self._pending, None
                if job is None:
                    self._thread = None
                    return
            try:
                _commit(self.run_dir, *job, self.arrays)
            except BaseException as exc:  # noqa: BLE001 - handed to the next save() or wait()
                self._error = self._error or exc

    def wait(self) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error


def load_run_state(run_dir: Path) -> tuple[object, dict]:
    """The committed strategy and state of a run directory; a clear error when there is none."""
    path = Path(run_dir) / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume {run_dir}: no checkpoint ({path} is missing)")
    state = json.loads(path.read_text())
    strategy = population.load_checkpoint(path.parent / state["strategy_file"])
    if strategy.generation != state["generation"]:
        raise ValueError(f"{path}: strategy file is at generation {strategy.generation}, "
                         f"state says {state['generation']}")
    return strategy, state


def trim_metrics(path: Path, generations_done: int) -> None:
    """Drop metrics lines of generations after the checkpoint (written, then interrupted), so
    the resumed run's lines follow on exactly."""
    # With nothing committed the run starts over: even the start's validation (generation -1) goes.
    records = [r for r in read_metrics(path) if r.get("generation", 0) < generations_done] \
        if generations_done > 0 else []
    atomic_write(Path(path), "".join(json.dumps(r) + "\n" for r in records))
