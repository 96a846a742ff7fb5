"""OpenMP core binding of each worker's vLLM CPU engine (VLLM_CPU_OMP_THREADS_BIND).

vLLM's CPU build binds its OpenMP threads itself ('auto'); several engines on one host would then
fight over the same cores. 'split' gives the workers of a host disjoint core ranges.
"""

from __future__ import annotations

import os

ENV = "VLLM_CPU_OMP_THREADS_BIND"


def _core_range(cores: list[int], parts: int, index: int) -> str:
    """The ``index``-th of ``parts`` disjoint 'a,b,c' core lists over ``cores`` ('nobind' when
    there are fewer cores than parts)."""
    if len(cores) < parts:
        return "nobind"
    cores = sorted(cores)
    return ",".join(map(str, cores[round(index * len(cores) / parts):round((index + 1) * len(cores) / parts)]))


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
    os.environ[ENV] = mode if mode != "split" else _core_range(
        list(os.sched_getaffinity(0)), len(engine_ranks), engine_ranks.index(rank))
