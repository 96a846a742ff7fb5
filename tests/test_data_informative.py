"""The informative-prompt sampler: reproducible, resumable, only train rows, favours prompts on
which candidates disagree."""

import json

import numpy as np
import pytest

from essa.data import load_task
from essa.data.informative import InformativeSampler, informative_items
from essa.config import load_config


def _rewards(ids, solved, candidates=6, rng=None):
    """(candidates, items) 0/1 rewards: prompts in ``solved`` half right, the others all wrong."""
    out = np.zeros((candidates, len(ids)))
    for j, item in enumerate(ids):
        if item in solved:
            out[: candidates // 2, j] = 1.0
    return out


def _drive(sampler, generations, solved):
    batches = []
    for g in range(generations):
        ids = sampler.batch(g)
        batches.append(ids.tolist())
        sampler.update(g, ids, _rewards(ids.tolist(), solved))
    return batches


def test_informative_items_needs_disagreement_among_finite_candidates():
    r = np.array([[1.0, 0.0, 1.0, np.nan], [1.0, 1.0, 0.5, np.nan], [np.nan, 0.0, 1.0, np.nan]])
    assert informative_items(r).tolist() == [False, True, True, False]


def test_batches_are_reproducible_and_reuse_informative_prompts_least_recently_used_first():
    solved = set(range(0, 400, 3))  # a third of the prompts split the candidates
    a = _drive(InformativeSampler(400, 16, seed=5, fresh_share=0.5), 12, solved)
    b = _drive(InformativeSampler(400, 16, seed=5, fresh_share=0.5), 12, solved)
    assert a == b
    assert _drive(InformativeSampler(400, 16, seed=6, fresh_share=0.5), 12, solved) != a
    for batch in a:
        assert len(batch) == 16 and len(set(batch)) == 16
    assert set(a[0]) & solved  # generation 0 is all fresh, some of it informative
    later = [x for batch in a[4:] for x in batch]
    # reused prompts are informative ones: the share of informative prompts rises well above 1/3
    assert sum(x in solved for x in later) / len(later) > 0.6
    # every reused prompt was informative when last seen
    s = InformativeSampler(400, 16, seed=5, fresh_share=0.5)
    _drive(s, 5, solved)
    ids = s.batch(5)
    assert s.last_batch["reused"] == 8 and all(int(i) in solved for i in ids[:8])


def test_fresh_share_one_is_the_uniform_stream_and_uninformative_prompts_never_return():
    s = InformativeSampler(50, 8, seed=1, fresh_share=1.0)
    seen = _drive(s, 6, solved=set())
    from essa.data import BatchSampler
    u = BatchSampler(50, 8, seed=1)
    assert seen == [u.batch(g).tolist() for g in range(6)]
    s = InformativeSampler(500, 8, seed=1, fresh_share=0.25)
    batches = _drive(s, 10, solved=set())  # nothing is ever informative: all fresh, no repeats
    flat = [x for b in batches for x in b]
    assert len(flat) == len(set(flat))


def test_state_round_trips_through_json_and_continues_identically():
    solved = set(range(0, 300, 2))
    full = InformativeSampler(300, 12, seed=3, fresh_share=0.5)
    whole = _drive(full, 10, solved)
    cut = InformativeSampler(300, 12, seed=3, fresh_share=0.5)
    first = _drive(cut, 4, solved)
    saved = json.loads(json.dumps(cut.state()))
    resumed = InformativeSampler(300, 12, seed=3, fresh_share=0.5)
    resumed.load_state(saved)
    rest = []
    for g in range(4, 10):
        ids = resumed.batch(g)
        rest.append(ids.tolist())
        resumed.update(g, ids, _rewards(ids.tolist(), solved))
    assert first + rest == whole
    with pytest.raises(ValueError, match="outside the train split"):
        InformativeSampler(100, 12, seed=3).load_state(saved)


def test_failed_candidates_are_ignored_and_all_failed_prompts_learn_nothing():
    s = InformativeSampler(20, 4, seed=0, fresh_share=0.5)
    ids = s.batch(0)
    r = np.array([[1.0, 0.0, np.nan, 1.0], [0.0, 0.0, np.nan, 1.0], [np.nan] * 4])
    assert s.update(0, ids, r) == 1
    assert int(ids[2]) not in s.records
    assert s.records[int(ids[0])] == [0.5, 0, True] and s.records[int(ids[1])][2] is False


def test_indices_stay_in_the_train_split_and_never_reach_validation_or_test(tmp_path):
    config = load_config(overrides=["task.arithmetic.train_size=60", "task.arithmetic.validation_size=20",
                                    "task.arithmetic.test_size=20"])
    task = load_task(config.task)
    train = task.split("train")
    held_out = {e.question for split in ("validation", "test") for e in task.split(split)}
    s = InformativeSampler(len(train), 16, seed=0, fresh_share=0.5)
    drawn = _drive(s, 20, solved=set(range(0, 60, 2)))  # the stream wraps around 5 times
    flat = [x for b in drawn for x in b]
    assert min(flat) >= 0 and max(flat) < len(train)
    assert not {train[i].question for i in flat} & held_out
