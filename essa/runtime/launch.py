"""Roles and processes: MPI (rank 0 master, the others workers) or one process (no MPI, -n 1).

With one process the worker runs in the main thread (engines and reward time limits want it) and
the master in a second thread; they talk through queues with the same messages as over MPI. With
``runtime.master_evaluates`` rank 0 does the same beside its MPI workers.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from essa.runtime import EXIT_FAILURE
from essa.runtime.signals import StopFlag, ignore_stop_signals

log = logging.getLogger("essa")


def world():
    """(comm, size, rank): MPI's world, or (None, 1, 0) without mpi4py."""
    try:
        from mpi4py import MPI
    except ImportError:
        return None, 1, 0
    comm = MPI.COMM_WORLD
    return comm, comm.Get_size(), comm.Get_rank()


def prepare_master(config, resume_dir: Path | None):
    """Run directory + logging + the master's Run (fails fast, before workers do real work)."""
    from essa.config import to_yaml
    from essa.rundir import atomic_write_text, create_run_dir, setup_logging
    from essa.runtime.loop import Run
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    else:
        run_dir = create_run_dir(config)
    setup_logging(run_dir)
    log.info("run directory: %s%s", run_dir, " (resuming)" if resume_dir else "")
    return run_dir


def _master_beside_worker(drive_master, worker_side, config, on_failure) -> int:
    """The master (``drive_master() -> exit status``) in a thread, a worker in this main thread
    (engines and reward time limits want it); ``on_failure`` runs in the master's thread when
    the run fails, because the worker may be stuck in an evaluation."""
    from essa.runtime.evaluator import make_evaluator
    from essa.runtime.worker import run_worker
    outcome = {}

    def master() -> None:
        try:
            outcome["code"] = drive_master()
        except BaseException:
            log.exception("master failed")
            outcome["code"] = EXIT_FAILURE
        if outcome["code"] == EXIT_FAILURE:
            on_failure()

    thread = threading.Thread(target=master, name="essa-master", daemon=True)
    thread.start()
    run_worker(worker_side, lambda: make_evaluator(config))
    thread.join()
    return outcome.get("code", EXIT_FAILURE)


def run_local(config, resume_dir: Path | None) -> int:
    from essa.runtime.loop import Run
    from essa.runtime.transport import local_pair
    stop = StopFlag()
    stop.install()
    run_dir = prepare_master(config, resume_dir)
    master_side, worker_side = local_pair()
    run = Run(config, run_dir, master_side, stop, resume_dir is not None)

    def end_now() -> None:
        logging.shutdown()
        os._exit(EXIT_FAILURE)

    return _master_beside_worker(run.run, worker_side, config, end_now)


def run_mpi_master(comm, config, resume_dir: Path | None) -> int:
    """Rank 0: the master; with ``runtime.master_evaluates`` also a worker (called rank 0) in the
    main thread while the master runs in a thread."""
    from essa.runtime.loop import Run
    from essa.runtime.messages import Stop
    from essa.runtime.transport import MpiMaster, MpiMasterWithLocalWorker, local_pair
    stop = StopFlag()
    stop.install()
    transport, local_worker = MpiMaster(comm), None
    if config.runtime.master_evaluates:
        local_master, local_worker = local_pair(rank=0)
        transport = MpiMasterWithLocalWorker(transport, local_master)

    def drive() -> int:
        try:
            run_dir = prepare_master(config, resume_dir)
            run = Run(config, run_dir, transport, stop, resume_dir is not None)
            log.info("%d ranks: rank 0 master%s, %d workers", comm.Get_size(),
                     " (also evaluating)" if local_worker else "", len(transport.workers))
            code = run.run()
        except Exception:
            log.exception("master failed")
            transport.broadcast(Stop("error"))
            code = EXIT_FAILURE
        if code == EXIT_FAILURE:
            logging.shutdown()
            transport.abort(EXIT_FAILURE)  # workers may be mid-evaluation: end the job in bounded time
        return code

    if local_worker is None:
        return drive()
    return _master_beside_worker(drive, local_worker, config, on_failure=lambda: None)


def run_mpi_worker(comm, config) -> int:
    from essa.rundir import setup_logging
    from essa.runtime.evaluator import make_evaluator
    from essa.runtime.transport import MpiWorker
    from essa.runtime.worker import run_worker
    setup_logging(None)
    ignore_stop_signals()
    return run_worker(MpiWorker(comm), lambda: make_evaluator(config))


def main(config, resume_dir: Path | None = None) -> int:
    """Start this process's role; returns its exit status."""
    comm, size, rank = world()
    if size <= 1:
        return run_local(config, resume_dir)
    from essa.runtime.binding import apply_binding
    apply_binding(comm, config.runtime.cpu_bind, config.runtime.master_evaluates)
    if rank == 0:
        return run_mpi_master(comm, config, resume_dir)
    return run_mpi_worker(comm, config)
