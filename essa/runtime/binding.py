"""OpenMP core binding of each worker's vLLM CPU engine (VLLM_CPU_OMP_THREADS_BIND).

vLLM's CPU build binds its OpenMP threads itself ('auto'); several engines on one host would then
fight over the same cores. 'split' gives the workers of a host disjoint core ranges.
"""

from __future__ import annotations

import os

ENV = "VLLM_CPU_OMP_THREADS_BIND"


def core_ranges(cores: list[int], parts: int) -> list[str] | None:
    """``parts`` disjoint 'a,b,c' core lists over ``cores``; None when there are too few cores."""
    if parts < 1 or len(cores) < parts:
        return None
    cores = sorted(cores)
    bounds = [round(i * len(cores) / parts) for i in range(parts + 1)]
    return [",".join(str(c) for c in cores[bounds[i]:bounds[i + 1]]) for i in range(parts)]


def binding_for(mode: str, worker_index: int, workers_here: int, cores: list[int]) -> str:
    """The value of VLLM_CPU_OMP_THREADS_BIND for one worker."""
    if mode != "split":
        return mode
    ranges = core_ranges(cores, workers_here)
    return "nobind" if ranges is None else ranges[worker_index]


def apply_binding(comm, mode: str, master_evaluates: bool = False) -> None:
    """Collective over ``comm`` (every rank calls it): set this worker's binding, unless the
    environment already has one. Rank 0 is a worker too when ``master_evaluates``."""
    from mpi4py import MPI
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    ranks_here = node.allgather(comm.Get_rank())
    node.Free()
    rank = comm.Get_rank()
    engine_ranks = sorted(r for r in ranks_here if r != 0 or master_evaluates)
    if rank not in engine_ranks or ENV in os.environ:
        return
    os.environ[ENV] = binding_for(mode, engine_ranks.index(rank), len(engine_ranks),
                                  sorted(os.sched_getaffinity(0)))
