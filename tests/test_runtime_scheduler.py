"""The master's dynamic scheduling over an in-memory transport with workers of unequal speed."""

import queue
import threading
import time

import numpy as np
import pytest

from essa.fitness import Score, fitness_vector
from essa.runtime.master import Master
from essa.runtime.messages import Result, Setup
from essa.runtime.scheduler import RoundTasks, round_chunks, split_items
from essa.runtime.worker import check_score, run_worker


class _Hub:
    """Master side of several in-process workers (one inbox each, one shared outbox)."""

    def __init__(self, n):
        self.workers = list(range(1, n + 1))
        self.inbox = {r: queue.Queue() for r in self.workers}
        self.outbox = queue.Queue()

    def send(self, rank, msg):
        self.inbox[rank].put(msg)

    def broadcast(self, msg):
        for r in self.workers:
            self.inbox[r].put(msg)

    def poll(self, timeout=0.0):
        try:
            return self.outbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def flush(self, timeout=5.0):
        pass


class _Side:
    def __init__(self, hub, rank):
        self.rank, self.hub = rank, hub

    def send(self, msg):
        self.hub.outbox.put(msg)

    def recv(self):
        return self.hub.inbox[self.rank].get()

    def try_recv(self):
        try:
            return self.hub.inbox[self.rank].get_nowait()
        except queue.Empty:
            return None

    def flush(self, timeout=5.0):
        pass


class _SleepEvaluator:
    """Fitness = row index; rank 1 is fast, rank 2 slow."""

    checksum = "abc"

    def __init__(self, delay):
        self.delay = delay

    def prepare(self, setup):
        pass

    def score(self, rnd, task):
        time.sleep(self.delay)
        n = task.stop - task.start
        return Score(np.full(n, float(task.row)), tokens=n, seconds=self.delay)

    def close(self):
        pass


def test_fast_worker_takes_more_candidates_and_results_land_in_their_rows():
    hub = _Hub(2)
    delays = {1: 0.002, 2: 0.06}
    threads = [threading.Thread(target=run_worker, args=(_Side(hub, r), lambda r=r: _SleepEvaluator(delays[r])))
               for r in hub.workers]
    for t in threads:
        t.start()
    master = Master(hub, "abc", task_timeout_s=30)
    master.setup(Setup({}))  # the sleep evaluator ignores it
    out = master.run_round(0, np.zeros((20, 3)), [f"c{i}" for i in range(20)], "train",
                           np.arange(5), "accuracy")
    master.stop("done")
    for t in threads:
        t.join(timeout=10)
    by_rank = master.round.tasks_by_rank()
    assert fitness_vector(out).tolist() == [float(i) for i in range(20)]
    assert sum(by_rank.values()) == 20
    assert by_rank[1] > 3 * by_rank.get(2, 0)
    assert all(s.tokens == 5 for s in out)


def test_items_are_split_into_chunks_and_recombined_by_weight():
    assert split_items(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert split_items(2, 5) == [(0, 1), (1, 2)]
    assert round_chunks(40, split_rows=True, workers=1) == [(0, 20), (20, 40)]
    assert round_chunks(40, split_rows=True, workers=8) == [(0, 13), (13, 27), (27, 40)]  # >= 16 items
    assert round_chunks(40, split_rows=False, workers=8) == [(0, 40)]
    # one worker: large batches, at most 128 items (a stop request waits for a pass to end)
    assert round_chunks(541, split_rows=True, workers=1) == split_items(541, 5)
    assert round_chunks(200, split_rows=True, workers=1) == [(0, 100), (100, 200)]
    vectors = np.arange(6.0).reshape(2, 3)
    tasks = RoundTasks.build(1, 0, vectors, chunks=split_items(10, 3))
    first = tasks.assign(7)
    assert len(tasks.tasks) + tasks.held(7) == 6 and first.row == 0 and first.vector.tolist() == [0.0, 1.0, 2.0]
    rows = [tasks.assign(r) for r in range(5)]
    assert [t.vector[0] for t in rows] == [0.0, 0.0, 3.0, 3.0, 3.0]  # each task carries its row


def _result(round_id, row, stop, rank=1):
    return Result(round_id, 0, row, 0, stop, rank, Score(np.full(stop, 0.5)))


def test_stale_and_duplicate_results_are_dropped_and_counted():
    tasks = RoundTasks.build(5, 0, np.zeros((1, 3)), chunks=[(0, 4)])
    task = tasks.assign(1)
    assert not tasks.accept(_result(4, 0, 4), round_id=5)
    assert tasks.accept(_result(5, task.row, 4), round_id=5)
    assert not tasks.accept(_result(5, task.row, 4), round_id=5)
    assert (tasks.stale, tasks.duplicate) == (1, 1) and tasks.done()


def test_console_line_prints_zero_fitness_as_zero_not_nan():
    import math
    from essa.runtime.loop import _or_nan
    assert _or_nan(0.0) == 0.0 and _or_nan(0.25) == 0.25
    assert math.isnan(_or_nan(None))


def test_a_second_task_is_queued_only_while_more_tasks_wait_than_workers():
    sent = []

    class Recorder:
        workers = [1, 2]

        def send(self, rank, msg):
            sent.append((rank, msg.row))

    master = Master(Recorder(), "abc", task_timeout_s=30)
    master.ready = [1, 2]
    tasks = RoundTasks.build(1, 0, np.zeros((6, 2)), [(0, 1)])
    master._dispatch(tasks)
    assert sent == [(1, 0), (2, 1), (1, 2), (2, 3)]  # each worker: one running, one queued
    assert tasks.accept(_result(1, 0, 1), round_id=1)
    master._dispatch(tasks)
    assert len(sent) == 4  # two tasks left for two workers: none is queued behind a running one
    assert tasks.accept(_result(1, 2, 1), round_id=1)
    master._dispatch(tasks)
    assert sent[4:] == [(1, 4)] and tasks.held(1) == 1 and tasks.held(2) == 2


def test_guided_cuts_keep_whole_candidates_until_the_end_and_cover_every_item_once():
    tasks = RoundTasks.build(1, 0, np.zeros((8, 2)), [(0, 32)], workers=4, min_items=4)
    handed = []
    while (task := tasks.assign(len(handed) % 4)) is not None:
        handed.append((task.row, task.start, task.stop))
    sizes = [b - a for _, a, b in handed]
    # 256 items over 4 workers: whole candidates while waiting / 4 >= 32, then slices
    assert sizes[:5] == [32] * 5 and len(handed) > 8
    assert all(4 <= s < 8 for s in sizes[-4:]) and min(sizes) == 4  # no rest under min_items
    for row in range(8):  # each row's items exactly once, in order
        spans = [(a, b) for r, a, b in handed if r == row]
        assert spans[0][0] == 0 and spans[-1][1] == 32
        assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    whole = RoundTasks.build(1, 0, np.zeros((8, 2)), [(0, 32)], workers=4, min_items=0)
    assert [whole.assign(0).stop for _ in range(8)] == [32] * 8 and whole.assign(0) is None


class _PerItemEvaluator(_SleepEvaluator):
    """A different score for every (row, item): the row's fitness is the mean over its items."""

    def score(self, rnd, task):
        time.sleep(self.delay)
        ids = rnd.item_ids[task.start:task.stop]
        return Score(task.row + 0.1 * np.sin(ids * 1.7 + task.row), tokens=len(ids), seconds=self.delay)


def _round_on_workers(n_workers, min_task_items):
    hub = _Hub(n_workers)
    threads = [threading.Thread(target=run_worker, args=(_Side(hub, r), lambda: _PerItemEvaluator(0.003)))
               for r in hub.workers]
    for t in threads:
        t.start()
    master = Master(hub, "abc", task_timeout_s=30, min_task_items=min_task_items)
    master.setup(Setup({}))
    out = master.run_round(0, np.zeros((7, 3)), [f"c{i}" for i in range(7)], "train",
                           np.arange(100, 125), "accuracy")
    master.stop("done")
    for t in threads:
        t.join(timeout=10)
    return fitness_vector(out), master.round.tasks_by_rank(), out


def test_a_candidate_cut_into_slices_gets_the_fitness_it_gets_whole():
    (whole, whole_ranks, _), (cut, cut_ranks, cut_scores) = _round_on_workers(1, 0), _round_on_workers(3, 2)
    assert sum(whole_ranks.values()) == 7 and sum(cut_ranks.values()) > 7
    assert np.array_equal(whole, cut)  # per-item scores: the same floats
    expected = [np.mean(r + 0.1 * np.sin(np.arange(100, 125) * 1.7 + r)) for r in range(7)]
    assert np.allclose(cut, expected, rtol=0, atol=1e-12)
    assert [s.tokens for s in cut_scores] == [25] * 7


def test_an_evaluator_answer_of_the_wrong_length_is_an_error():
    check_score(Score([1.0, float("inf"), float("nan")]), 3)  # non-finite: a failed candidate, not an error
    with pytest.raises(ValueError, match="2 scores for a task of 3 items"):
        check_score(Score([1.0, 2.0]), 3)
    with pytest.raises(TypeError, match="not a Score"):
        check_score(0.5, 1)


def test_scores_of_slices_join_in_item_order():
    joined = Score.join([Score([1.0, 2.0], [1.0, 0.0], None, 3, 0.5), Score([3.0], [1.0], None, 1, 0.25)])
    assert joined.items.tolist() == [1.0, 2.0, 3.0] and joined.fitness == 2.0
    assert joined.accuracy == pytest.approx(2 / 3) and joined.loglik is None
    assert (joined.tokens, joined.seconds) == (4, 0.75)


class _PassEvaluator(_SleepEvaluator):
    """Scores up to 4 tasks in one 'engine pass' and records the pass sizes."""

    tasks_per_pass = 4

    def __init__(self, delay, passes):
        super().__init__(delay)
        self.passes = passes

    def score_pass(self, rnd, tasks):
        time.sleep(self.delay)
        self.passes.append(len(tasks))
        return [self.score_one(t) for t in tasks]

    def score(self, rnd, task):
        return self.score_pass(rnd, [task])[0]

    @staticmethod
    def score_one(task):
        return Score(np.full(task.stop - task.start, float(task.row)), tokens=task.stop - task.start)


def test_a_worker_scores_the_tasks_waiting_for_the_same_prompts_in_one_pass():
    hub, passes = _Hub(2), {1: [], 2: []}
    threads = [threading.Thread(target=run_worker,
                                args=(_Side(hub, r), lambda r=r: _PassEvaluator(0.02, passes[r])))
               for r in hub.workers]
    for t in threads:
        t.start()
    master = Master(hub, "abc", task_timeout_s=30)
    master.setup(Setup({}))
    out = master.run_round(0, np.zeros((24, 3)), [f"c{i}" for i in range(24)], "train",
                           np.arange(5), "accuracy")
    master.stop("done")
    for t in threads:
        t.join(timeout=10)
    assert fitness_vector(out).tolist() == [float(i) for i in range(24)]
    sizes = passes[1] + passes[2]
    assert sum(sizes) == 24 and max(sizes) == 4 and len(sizes) < 12  # several candidates per pass
    assert master.capacity == {1: 8, 2: 8}  # two passes' worth held per worker
