"""Core binding under mpirun: each engine rank gets its own cores and as many torch threads.

oneMKL drops every process started by mpirun to one thread (it reads MPI_LOCALNRANKS); vLLM's
CPU build computes on torch's threads in-process, so without apply_binding a worker that owns two
cores computes on one.
"""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from essa.runtime.binding import _core_range

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROBE = """
import json, os, sys
from mpi4py import MPI
import torch
from essa.runtime.binding import apply_binding
before = torch.get_num_threads()
apply_binding(MPI.COMM_WORLD, sys.argv[1], sys.argv[2] == "1")
print("BIND " + json.dumps([MPI.COMM_WORLD.Get_rank(), before, torch.get_num_threads(),
                  os.environ.get("VLLM_CPU_OMP_THREADS_BIND")]))
"""


def _probe(ranks: int, mode: str, master_evaluates: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_OMP_THREADS_BIND"}
    out = subprocess.run([str(BIN / "mpirun"), "-n", str(ranks), sys.executable, "-c", PROBE, mode,
                          "1" if master_evaluates else "0"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # ranks print at once: under load two lines can arrive joined, so find each record
    rows = [json.loads(found) for found in re.findall(r"BIND (\[[^\]]*\])", out.stdout)]
    return {rank: (before, after, bound) for rank, before, after, bound in rows}


def test_core_ranges_are_disjoint_and_cover_the_cores():
    cores = [0, 1, 2, 3, 4, 5]
    parts = [_core_range(cores, 3, i) for i in range(3)]
    assert parts == ["0,1", "2,3", "4,5"]
    assert _core_range([0, 1], 3, 0) == "nobind"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to split")
def test_a_lone_worker_computes_on_every_core_and_shared_cores_are_split():
    cores = len(os.sched_getaffinity(0))
    rows = _probe(2, "split", False)  # master + one worker: the worker owns every core
    before, after, bound = rows[1]
    assert after == cores and len(bound.split(",")) == cores
    assert rows[0][1] == rows[0][0] and rows[0][2] is None  # the master is left alone
    rows = _probe(2, "split", True)  # both ranks run engines: half the cores each
    assert {rows[r][2] for r in rows} == {_core_range(sorted(os.sched_getaffinity(0)), 2, i) for i in range(2)}
    assert all(rows[r][1] == cores // 2 for r in rows)
