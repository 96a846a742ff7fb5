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
    environment already has one, and its torch threads. Rank 0 is a worker too when
    ``master_evaluates``."""
    from mpi4py import MPI
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    ranks_here = node.allgather(comm.Get_rank())
    node.Free()
    rank = comm.Get_rank()
    cores = sorted(os.sched_getaffinity(0))
    engine_ranks = sorted(r for r in ranks_here if r != 0 or master_evaluates)
    if rank not in engine_ranks:  # the master alone (its SFT warm start sets its own threads)
        return
    if ENV not in os.environ:
        os.environ[ENV] = mode if mode != "split" else _core_range(
            cores, len(engine_ranks), engine_ranks.index(rank))
    bound = os.environ[ENV]
    share = len(bound.split(",")) if bound not in ("auto", "nobind") and "|" not in bound and "-" not in bound \
        else max(1, len(cores) // len(engine_ranks))
    set_torch_threads(share)


def set_torch_threads(count: int) -> None:
    """Give torch ``count`` threads. Under mpirun oneMKL sees MPI_LOCALNRANKS and drops every
    process to one thread, and vLLM's CPU build runs its in-process engine on torch's threads: a
    worker owning two cores computed on one (measured: benchmarks/RESULTS.md, "Token budget")."""
    import torch
    torch.set_num_threads(max(1, int(count)))
