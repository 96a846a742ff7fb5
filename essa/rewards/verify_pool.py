"""A persistent pool of math-verify worker processes with a hard deadline per item.

Why not math-verify's own timeout: it uses ``signal.alarm``, which works only in the main thread,
and MPI ranks or inference servers call rewards from other threads. Why not
``concurrent.futures``: a stuck future cannot be cancelled, and its pool cannot kill one worker.
So each worker is a plain ``python -m essa.rewards.verify_worker`` subprocess speaking one JSON
line per job over pipes; the parent waits with ``poll`` and a deadline, and kills (SIGKILL) a
worker whose item runs past it. That item scores as unverified (None) and a fresh worker starts
at once, so one pathological completion costs at most the time limit plus nothing for the rest.

Workers are started lazily on first use and reused across calls; start-up (importing sympy and
warming the parsers, about a second) does not count against any item's deadline.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# The folder holding the `essa` package, so workers import it however the parent found it.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass
class _Worker:
    """One worker process and what the parent knows about it."""

    process: subprocess.Popen
    buffer: bytes = b""
    ready: bool = False
    job: int | None = None  # index of the job it is judging, None when idle
    deadline: float = 0.0  # start-up deadline until ready, then the current job's deadline

    @property
    def fd(self) -> int:
        return self.process.stdout.fileno()


class VerifyPool:
    """Judge (gold, prediction) pairs with math-verify in worker processes, each under a deadline.

    Thread-safe: concurrent calls are served one after another.
    """

    def __init__(self, size: int = 1, memory_limit_mb: int = 4096, startup_timeout_s: float = 120.0):
        if size < 1:
            raise ValueError(f"a verify pool needs at least one worker, got {size}")
        self.size = size
        self.memory_limit_mb = memory_limit_mb
        self.startup_timeout_s = startup_timeout_s
        self.restarts = 0  # workers killed for running past a deadline or dying mid-job
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def judge(self, jobs: list[dict], timeout_s: float) -> list[bool | None]:
        """Verdict per job: True / False, or None when it timed out or its worker died.

        A job is ``{"gold": str, "pred": str, "raw": bool}`` (see ``verify_worker``).
        """
        with self._lock:
            while len(self._workers) < self.size:
                self._workers.append(self._spawn())
            results: list[bool | None] = [None] * len(jobs)
            pending = deque(range(len(jobs)))
            while pending or any(w.job is not None for w in self._workers):
                self._dispatch(pending, jobs, timeout_s)
                self._collect(results)
                self._enforce_deadlines()
            return results

    def close(self) -> None:
        """Stop all workers (they are restarted by the next call)."""
        with self._lock:
            for worker in self._workers:
                _stop(worker)
            self._workers.clear()

    def _spawn(self) -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "essa.rewards.verify_worker",
                   str(self.memory_limit_mb), str(os.getpid())]
        process = _start_process(command, env)
        return _Worker(process, deadline=time.monotonic() + self.startup_timeout_s)

    def _replace(self, worker: _Worker) -> None:
        _stop(worker)
        self._workers[self._workers.index(worker)] = self._spawn()

    def _dispatch(self, pending: deque, jobs: list[dict], timeout_s: float) -> None:
        """Hand the next pending jobs to idle, ready workers."""
        for worker in list(self._workers):
            if not (pending and worker.ready and worker.job is None):
                continue
            index = pending.popleft()
            try:
                worker.process.stdin.write((json.dumps(jobs[index]) + "\n").encode())
                worker.process.stdin.flush()
            except OSError:  # it died while idle (e.g. its parent thread ended): retry elsewhere
                pending.appendleft(index)
                self._replace(worker)
                continue
            worker.job, worker.deadline = index, time.monotonic() + timeout_s

    def _collect(self, results: list[bool | None]) -> None:
        """Wait until a worker answers or the nearest deadline passes; record answers."""
        watched = [w for w in self._workers if not w.ready or w.job is not None]
        if not watched:
            return
        wait_s = max(0.0, min(w.deadline for w in watched) - time.monotonic())
        # poll, not select: select fails on descriptors above 1024, common in inference servers.
        poller = select.poll()
        for worker in watched:
            poller.register(worker.fd, select.POLLIN)
        readable = {fd for fd, _ in poller.poll(wait_s * 1000)}
        for worker in [w for w in watched if w.fd in readable]:
            data = os.read(worker.fd, 65536)
            if not data:
                self._on_exit(worker)
                continue
            worker.buffer += data
            while b"\n" in worker.buffer:
                line, worker.buffer = worker.buffer.split(b"\n", 1)
                self._on_line(worker, line.strip(), results)

    def _on_line(self, worker: _Worker, line: bytes, results: list[bool | None]) -> None:
        if line == b"ready":
            worker.ready = True
        elif worker.job is not None:
            results[worker.job] = line == b"1"
            worker.job = None

    def _on_exit(self, worker: _Worker) -> None:
        """A worker closed its stdout: a crash mid-job scores None; a failed start is fatal."""
        if not worker.ready:
            code = worker.process.wait()
            raise RuntimeError(f"math-verify worker exited while starting (exit code {code}); "
                               "is math-verify installed in this Python environment?")
        if worker.job is not None:
            self.restarts += 1
        self._replace(worker)

    def _enforce_deadlines(self) -> None:
        """Kill workers past their deadline; their items stay None."""
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.deadline > now:
                continue
            if not worker.ready:
                _stop(worker)
                self._workers.remove(worker)
                raise RuntimeError(f"math-verify worker did not start in {self.startup_timeout_s} s")
            if worker.job is not None:
                self.restarts += 1
                self._replace(worker)


def _stop(worker: _Worker) -> None:
    """Kill a worker and reap it (SIGKILL: a worker stuck in C code ignores anything milder)."""
    if worker.process.poll() is None:
        worker.process.kill()
    worker.process.wait()
    for stream in (worker.process.stdin, worker.process.stdout):
        try:
            stream.close()
        except OSError:
            pass


_starter: ThreadPoolExecutor | None = None
_starter_pid = 0
_starter_lock = threading.Lock()


def _start_process(command: list[str], env: dict) -> subprocess.Popen:
    """Start a worker from one long-lived thread of this process.

    Workers ask Linux to kill them when their parent goes (so a worker stuck in sympy does not
    outlive a crashed rank), and Linux means the parent *thread*: started from a short-lived
    calling thread, a worker would die with it.
    """
    global _starter, _starter_pid
    with _starter_lock:
        if _starter is None or _starter_pid != os.getpid():
            _starter, _starter_pid = ThreadPoolExecutor(1, thread_name_prefix="verify-starter"), os.getpid()
        starter = _starter
    return starter.submit(
        subprocess.Popen, command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    ).result()


_shared: dict[tuple[int, int], VerifyPool] = {}
_shared_lock = threading.Lock()
_shared_pid = os.getpid()


def shared_pool(size: int = 1, memory_limit_mb: int = 4096) -> VerifyPool:
    """The process-wide pool of this size, created on first use and closed at exit."""
    global _shared_pid
    with _shared_lock:
        if os.getpid() != _shared_pid:
            # A forked child inherits the parent's pipes: leave those workers to the parent.
            _shared.clear()
            _shared_pid = os.getpid()
        key = (size, memory_limit_mb)
        if key not in _shared:
            _shared[key] = VerifyPool(size, memory_limit_mb)
        return _shared[key]


@atexit.register
def close_shared_pools() -> None:
    """Stop the workers of every shared pool of this process."""
    with _shared_lock:
        if os.getpid() == _shared_pid:
            for pool in _shared.values():
                pool.close()
