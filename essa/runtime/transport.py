"""Moving messages between master and workers: MPI point-to-point, or queues inside one process.

The master's side is :class:`MasterTransport`; a worker's side (:class:`MpiWorker`,
:class:`LocalWorker`) has ``rank``, ``send``, ``recv``, ``try_recv`` and ``flush``. Nothing here
knows what the messages mean.

Why polling: MPICH spins while a blocking receive waits. With more ranks than cores (tests,
benchmarks, a master beside its workers) the spinning ranks would starve the ones doing work, so
every wait here is a non-blocking probe between short sleeps that grow while nothing arrives.
"""

from __future__ import annotations

import os
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
    """Sleeps doubling from MIN_SLEEP_S: at most ``prompt_sleep_s`` for ``prompt_for_s`` s, then MAX_SLEEP_S."""

    def __init__(self, prompt_for_s: float = PROMPT_FOR_S, prompt_sleep_s: float = PROMPT_SLEEP_S):
        self.delay, self.t0 = MIN_SLEEP_S, time.time()
        self.prompt_for_s, self.prompt_sleep_s = prompt_for_s, prompt_sleep_s

    def sleep(self, deadline: float | None = None) -> None:
        delay = self.delay if deadline is None else max(0.0, min(self.delay, deadline - time.time()))
        time.sleep(delay)
        cap = self.prompt_sleep_s if time.time() - self.t0 < self.prompt_for_s else MAX_SLEEP_S
        self.delay = min(self.delay * 2, cap)


def world():
    """(comm, size, rank): MPI's world, or (None, 1, 0) without mpi4py."""
    try:
        from mpi4py import MPI
    except ImportError:
        return None, 1, 0
    comm = MPI.COMM_WORLD
    return comm, comm.Get_size(), comm.Get_rank()


class _MpiSends:
    """Non-blocking sends over ``comm``, each request kept alive until complete (it holds the buffer)."""

    def __init__(self, comm):
        self.comm, self.pending, self._prune_at = comm, [], 64

    def send(self, rank: int, msg) -> None:
        self.pending.append(self.comm.isend(msg, dest=rank, tag=0))
        # Completed requests are dropped once the list has doubled, not at every send: a round
        # starts with hundreds of sends, and testing them all each time cost O(sends^2).
        if len(self.pending) >= self._prune_at:
            self.pending = [r for r in self.pending if not r.Test()]
            self._prune_at = 2 * len(self.pending) + 64

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (politely) until the sends are delivered, e.g. the Stop before exiting."""
        deadline, backoff = time.time() + timeout, _Backoff()
        while self.pending and time.time() < deadline:
            self.pending = [r for r in self.pending if not r.Test()]
            backoff.sleep(deadline)


class LocalWorker:
    """A worker in the master's process, over queues: rank 1 like the first MPI worker when there
    is no MPI, or rank 0 when the master's own process also evaluates under MPI."""

    def __init__(self, rank: int = 1):
        self.rank, self.inbox, self.outbox = rank, queue.Queue(), queue.Queue()

    def send(self, msg) -> None:
        self.outbox.put(msg)

    def recv(self):
        return self.inbox.get()

    def try_recv(self):
        try:
            return self.inbox.get_nowait()
        except queue.Empty:
            return None

    def flush(self, timeout: float = 5.0) -> None:
        pass


class MpiWorker:
    """A worker rank's side over an mpi4py communicator."""

    def __init__(self, comm):
        from mpi4py import MPI
        self._any_tag, self.comm, self.rank = MPI.ANY_TAG, comm, comm.Get_rank()
        self._sends = _MpiSends(comm)
        self.flush = self._sends.flush

    def send(self, msg) -> None:
        self._sends.send(0, msg)

    def recv(self):
        """The next message from the master (waits with sleeps, never spins)."""
        backoff = _Backoff()
        while not self.comm.iprobe(source=0, tag=self._any_tag):
            backoff.sleep()
        return self.comm.recv(source=0, tag=self._any_tag)

    def try_recv(self):
        """The next message from the master if one is already here, else None. Probed twice:
        after a long pause (an engine pass) MPICH's first probe only queues what arrived meanwhile
        and answers no (a Stop sent 9 s earlier was missed by one probe), costing a whole pass."""
        tag = self._any_tag
        if self.comm.iprobe(source=0, tag=tag) or self.comm.iprobe(source=0, tag=tag):
            return self.comm.recv(source=0, tag=tag)
        return None


class MasterTransport:
    """Rank 0's side: the MPI workers of ``comm`` (ranks 1..), plus ``local``, a worker in this
    process (no MPI, or ``runtime.master_evaluates``)."""

    def __init__(self, comm=None, local: LocalWorker | None = None):
        self.comm, self.local = comm, local
        self.workers = ([local.rank] if local else []) + (list(range(1, comm.Get_size())) if comm else [])
        if comm is not None:
            from mpi4py import MPI
            self._mpi, self._sends = MPI, _MpiSends(comm)

    def send(self, rank: int, msg) -> None:
        if self.local is not None and rank == self.local.rank:
            self.local.inbox.put(msg)
        else:
            self._sends.send(rank, msg)

    def broadcast(self, msg) -> None:
        """One copy to every worker; sent non-blocking, so a busy worker delays nobody."""
        for rank in self.workers:
            self.send(rank, msg)

    def poll(self, timeout: float = 0.0):
        """The next message from any worker, or None after ``timeout`` seconds."""
        if self.comm is None:  # queues only: a blocking get answers at once and costs nothing
            try:
                return self.local.outbox.get(timeout=max(timeout, 1e-6))
            except queue.Empty:
                return None
        deadline, backoff = time.time() + timeout, _Backoff(float("inf"), MASTER_SLEEP_S)
        while True:
            msg = self._receive()
            if msg is not None or time.time() >= deadline:
                return msg
            backoff.sleep(deadline)

    def _receive(self):
        if self.local is not None and not self.local.outbox.empty():
            return self.local.outbox.get_nowait()
        status = self._mpi.Status()
        if self.comm.iprobe(source=self._mpi.ANY_SOURCE, tag=self._mpi.ANY_TAG, status=status):
            return self.comm.recv(source=status.Get_source(), tag=status.Get_tag())
        return None

    def flush(self, timeout: float = 5.0) -> None:
        if self.comm is not None:
            self._sends.flush(timeout)

    def abort(self, code: int) -> None:
        """End every rank now (a worker stuck in an evaluation never reads a Stop)."""
        if self.comm is not None:
            self.comm.Abort(code)
        os._exit(code)  # one process: the worker thread shares it
