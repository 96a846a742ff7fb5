"""The math-verify worker pool: survives dead workers, forks and concurrent threads."""

import os
import threading

from essa.rewards.verify_pool import VerifyPool, shared_pool

HALF = {"gold": "\\frac{1}{2}", "pred": "0.5", "raw": False}
THIRD = {"gold": "\\frac{1}{3}", "pred": "0.5", "raw": False}


def test_pool_answers_in_job_order_with_two_workers():
    pool = VerifyPool(size=2)
    try:
        assert pool.judge([HALF, THIRD, HALF, THIRD, HALF], timeout_s=10.0) == [True, False, True, False, True]
    finally:
        pool.close()


def test_worker_killed_while_idle_is_replaced():
    pool = VerifyPool(size=1)
    try:
        assert pool.judge([HALF], timeout_s=10.0) == [True]
        victim = pool._workers[0].process
        victim.kill()
        victim.wait()
        assert pool.judge([HALF, THIRD], timeout_s=10.0) == [True, False]
        assert pool._workers[0].process.pid != victim.pid
    finally:
        pool.close()


def test_forked_child_gets_its_own_pool():
    parent_pool = shared_pool(1, 4096)
    assert parent_pool.judge([HALF], timeout_s=10.0) == [True]
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child scores with a pool of its own, then leaves without cleanup
        try:
            ok = shared_pool(1, 4096) is not parent_pool and shared_pool(1, 4096).judge([HALF], 10.0) == [True]
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.waitpid(child, 0)
    assert answer == b"1"
    assert parent_pool.judge([THIRD], timeout_s=10.0) == [False]  # the parent's workers still serve


def test_concurrent_threads_share_one_pool():
    pool = VerifyPool(size=1)
    results = {}

    def run(name, job):
        results[name] = pool.judge([job] * 5, timeout_s=10.0)

    threads = [threading.Thread(target=run, args=(n, j)) for n, j in (("a", HALF), ("b", THIRD))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert results == {"a": [True] * 5, "b": [False] * 5}
    finally:
        pool.close()


def test_worker_outlives_the_thread_that_started_it():
    pool = VerifyPool(size=1)
    try:
        starter = threading.Thread(target=pool.judge, args=([HALF], 10.0))
        starter.start()
        starter.join(timeout=60)
        first_pid = pool._workers[0].process.pid
        assert pool.judge([HALF, THIRD], timeout_s=10.0) == [True, False]
        assert pool._workers[0].process.pid == first_pid and pool.restarts == 0
    finally:
        pool.close()
