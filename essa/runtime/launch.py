"""Roles and processes: MPI (rank 0 master, the others workers) or one process (no MPI, -n 1).

A worker in the master's process (one process, or ``runtime.master_evaluates``) runs in the main
thread (engines and reward time limits want it), the master in a second one, over queues.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from essa.atomic import atomic_write
from essa.config import to_yaml
from essa.rundir import create_run_dir, setup_logging
from essa.runtime import EXIT_FAILURE
from essa.runtime.binding import apply_binding
from essa.runtime.evaluator import make_evaluator
from essa.runtime.loop import Run
from essa.runtime.messages import Stop
from essa.runtime.signals import StopFlag, ignore_stop_signals
from essa.runtime.transport import LocalWorker, MasterTransport, MpiWorker, world
from essa.runtime.worker import run_worker

log = logging.getLogger("essa")


def prepare_master(config, resume_dir: Path | None):
    """Run directory + logging (fails fast, before workers do real work)."""
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        atomic_write(run_dir / "config.yaml", to_yaml(config))
    else:
        run_dir = create_run_dir(config)
    setup_logging(run_dir)
    log.info("run directory: %s%s", run_dir, " (resuming)" if resume_dir else "")
    return run_dir


def run_master(comm, config, resume_dir: Path | None) -> int:
    """Rank 0 (``comm``) or the only process (None): the master, and a worker in the main thread
    beside it when there is no MPI or with ``runtime.master_evaluates``."""
    stop = StopFlag()
    stop.install()
    local = LocalWorker(0 if comm else 1) if comm is None or config.runtime.master_evaluates else None
    transport = MasterTransport(comm, local)

    def start() -> Run:
        return Run(config, prepare_master(config, resume_dir), transport, stop, resume_dir is not None)

    run = start() if comm is None else None  # one process: a set-up error is exit 2, raised here

    def drive() -> int:
        nonlocal run
        try:
            run = run or start()
            if comm is not None:
                log.info("%d ranks: rank 0 master%s, %d workers", comm.Get_size(),
                         " (also evaluating)" if local else "", len(transport.workers))
            code = run.run()
        except Exception:
            log.exception("master failed")
            transport.broadcast(Stop("error"))
            code = EXIT_FAILURE
        if code == EXIT_FAILURE:
            logging.shutdown()
            transport.abort(EXIT_FAILURE)  # workers may be mid-evaluation: end the job in bounded time
        return code

    if local is None:
        return drive()
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(code=drive()), name="essa-master", daemon=True)
    thread.start()
    run_worker(local, lambda: make_evaluator(config))
    thread.join()
    return outcome.get("code", EXIT_FAILURE)


def main(config, resume_dir: Path | None = None) -> int:
    """Start this process's role; returns its exit status."""
    comm, size, rank = world()
    if size <= 1:
        return run_master(None, config, resume_dir)
    apply_binding(comm, config.runtime.cpu_bind, config.runtime.master_evaluates)
    if rank == 0:
        return run_master(comm, config, resume_dir)
    setup_logging(None)
    ignore_stop_signals()
    return run_worker(MpiWorker(comm), lambda: make_evaluator(config))
