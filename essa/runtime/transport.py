"""Moving messages between master and workers: MPI point-to-point, or queues inside one process.

The master's side has ``workers``, ``send(rank, msg)``, ``broadcast(msg)`` and ``poll(timeout)``;
a worker's side has ``rank``, ``send(msg)``, ``recv()`` and ``try_recv()``. Nothing here knows
what the messages mean.

Why polling: MPICH spins while a blocking receive waits. With more ranks than cores (tests,
benchmarks, a master beside its workers) the spinning ranks would starve the ones doing work, so
every wait here is a non-blocking probe between short sleeps that grow while nothing arrives.
"""

from __future__ import annotations

import queue
import time

MIN_SLEEP_S = 0.0005
MAX_SLEEP_S = 0.02
# A reply is expected soon: the master waits for results, a worker that just sent one waits for
# its next task. Short sleeps then keep a round trip to a few ms (each one is on the critical
# path of a worker); a wait that lasts longer (between generations) falls back to MAX_SLEEP_S.
PROMPT_SLEEP_S = 0.002
PROMPT_FOR_S = 0.25
MASTER_SLEEP_S = 0.0005  # one process: polling this often costs little and answers at once


class _Backoff:
    """Sleeps that double from MIN_SLEEP_S while a wait finds nothing, up to ``prompt_sleep_s``
    for the first ``prompt_for_s`` seconds (forever on the master) and MAX_SLEEP_S after."""

    def __init__(self, prompt_for_s: float = PROMPT_FOR_S, prompt_sleep_s: float = PROMPT_SLEEP_S):
        self.delay, self.t0 = MIN_SLEEP_S, time.time()
        self.prompt_for_s, self.prompt_sleep_s = prompt_for_s, prompt_sleep_s

    def sleep(self, deadline: float | None = None) -> None:
        delay = self.delay if deadline is None else max(0.0, min(self.delay, deadline - time.time()))
        time.sleep(delay)
        cap = self.prompt_sleep_s if time.time() - self.t0 < self.prompt_for_s else MAX_SLEEP_S
        self.delay = min(self.delay * 2, cap)


# ---- MPI -------------------------------------------------------------------------------------

class MpiMaster:
    """Rank 0's side over an mpi4py communicator (pickled messages, non-blocking sends)."""

    def __init__(self, comm):
        from mpi4py import MPI
        self._mpi = MPI
        self.comm = comm
        self.workers = list(range(1, comm.Get_size()))
        self._pending = []  # isend requests kept alive until complete (they hold the buffers)
        self._prune_at = 64

    def send(self, rank: int, msg) -> None:
        self._pending.append(self.comm.isend(msg, dest=rank, tag=0))
        # Completed requests are dropped once the list has doubled, not at every send: a round
        # starts with hundreds of sends, and testing them all each time cost O(sends^2).
        if len(self._pending) >= self._prune_at:
            self._pending = [r for r in self._pending if not r.Test()]
            self._prune_at = 2 * len(self._pending) + 64

    def broadcast(self, msg) -> None:
        """One copy to every worker; sent non-blocking, so a busy worker delays nobody."""
        for rank in self.workers:
            self.send(rank, msg)

    def poll(self, timeout: float = 0.0):
        """The next message from any worker, or None after ``timeout`` seconds."""
        deadline, status = time.time() + timeout, self._mpi.Status()
        backoff = _Backoff(float("inf"), MASTER_SLEEP_S)
        while True:
            if self.comm.iprobe(source=self._mpi.ANY_SOURCE, tag=self._mpi.ANY_TAG, status=status):
                return self.comm.recv(source=status.Get_source(), tag=status.Get_tag())
            if time.time() >= deadline:
                return None
            backoff.sleep(deadline)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (politely) until the sends are delivered, e.g. the Stop before exiting."""
        deadline, backoff = time.time() + timeout, _Backoff()
        while self._pending and time.time() < deadline:
            self._pending = [r for r in self._pending if not r.Test()]
            backoff.sleep(deadline)

    def abort(self, code: int) -> None:
        """Kill every rank (a worker stuck in an evaluation never reads a Stop)."""
        self.comm.Abort(code)


class MpiWorker:
    """A worker rank's side over an mpi4py communicator."""

    def __init__(self, comm):
        from mpi4py import MPI
        self._mpi = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self._pending = []

    def send(self, msg) -> None:
        self._pending = [r for r in self._pending if not r.Test()]
        self._pending.append(self.comm.isend(msg, dest=0, tag=0))

    def recv(self):
        """The next message from the master (waits with sleeps, never spins)."""
        backoff = _Backoff()
        while not self.comm.iprobe(source=0, tag=self._mpi.ANY_TAG):
            backoff.sleep()
        return self.comm.recv(source=0, tag=self._mpi.ANY_TAG)

    def try_recv(self):
        """The next message from the master if one is already here, else None.

        Probed twice: after a long pause in MPI (an engine pass), MPICH's first probe only moves
        messages that arrived meanwhile into its queue and still answers no (seen: a Stop sent
        9 s earlier was missed by one probe and found by the next), and a worker would then run
        a whole extra pass before it noticed."""
        tag = self._mpi.ANY_TAG
        if self.comm.iprobe(source=0, tag=tag) or self.comm.iprobe(source=0, tag=tag):
            return self.comm.recv(source=0, tag=tag)
        return None

    def flush(self, timeout: float = 5.0) -> None:
        deadline, backoff = time.time() + timeout, _Backoff()
        while self._pending and time.time() < deadline:
            self._pending = [r for r in self._pending if not r.Test()]
            backoff.sleep(deadline)


# ---- one process -----------------------------------------------------------------------------

class LocalMaster:
    """The master's side when master and its one worker share a process (no MPI, or -n 1)."""

    def __init__(self, to_worker: queue.Queue, to_master: queue.Queue, rank: int = 1):
        self.workers = [rank]
        self._out, self._in = to_worker, to_master

    def send(self, rank: int, msg) -> None:
        self._out.put(msg)

    def broadcast(self, msg) -> None:
        self._out.put(msg)

    def poll(self, timeout: float = 0.0):
        try:
            return self._in.get(timeout=timeout) if timeout > 0 else self._in.get_nowait()
        except queue.Empty:
            return None

    def flush(self, timeout: float = 5.0) -> None:
        pass

    def abort(self, code: int) -> None:
        """The worker shares this process: stopping it is the caller's job (os._exit)."""


class LocalWorker:
    """The worker's side in one process: rank 1 like the first MPI worker, or rank 0 when the
    master's own process also evaluates under MPI."""

    def __init__(self, to_worker: queue.Queue, to_master: queue.Queue, rank: int = 1):
        self.rank = rank
        self._in, self._out = to_worker, to_master

    def send(self, msg) -> None:
        self._out.put(msg)

    def recv(self):
        return self._in.get()

    def try_recv(self):
        try:
            return self._in.get_nowait()
        except queue.Empty:
            return None

    def flush(self, timeout: float = 5.0) -> None:
        pass


def local_pair(rank: int = 1) -> tuple[LocalMaster, LocalWorker]:
    """Both ends of the in-process transport; the worker is called ``rank``."""
    to_worker, to_master = queue.Queue(), queue.Queue()
    return LocalMaster(to_worker, to_master, rank), LocalWorker(to_worker, to_master, rank)


# ---- MPI plus a worker in the master's process ----------------------------------------------

class MpiMasterWithLocalWorker:
    """Rank 0's side when rank 0 also evaluates (``runtime.master_evaluates``): the MPI workers
    plus an in-process worker called rank 0, reached over queues."""

    def __init__(self, mpi: MpiMaster, local: LocalMaster):
        self.mpi, self.local = mpi, local
        self.workers = [*local.workers, *mpi.workers]

    def send(self, rank: int, msg) -> None:
        (self.local if rank in self.local.workers else self.mpi).send(rank, msg)

    def broadcast(self, msg) -> None:
        self.local.broadcast(msg)
        self.mpi.broadcast(msg)

    def poll(self, timeout: float = 0.0):
        """The next message from the local worker or any MPI worker, or None after ``timeout``."""
        deadline, backoff = time.time() + timeout, _Backoff(float("inf"), MASTER_SLEEP_S)
        while True:
            msg = self.local.poll()
            if msg is None:
                msg = self.mpi.poll()
            if msg is not None or time.time() >= deadline:
                return msg
            backoff.sleep(deadline)

    def flush(self, timeout: float = 5.0) -> None:
        self.mpi.flush(timeout)

    def abort(self, code: int) -> None:
        self.mpi.abort(code)
