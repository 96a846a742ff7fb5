"""The sign convention, the failure rule and fitness shaping (population.fitness)."""

import numpy as np
import pytest

from population.fitness import ALL_FAILED_FITNESS, centered_ranks, sanitize_fitness, to_cost


def test_failed_candidates_rank_strictly_last():
    values, failed = sanitize_fitness([0.5, np.nan, 0.2, np.inf, -np.inf], 5)
    assert failed.tolist() == [False, True, False, True, True]
    assert np.all(values[failed] < 0.2)
    assert values[0] == 0.5 and values[2] == 0.2


def test_all_failed_is_a_tie():
    values, failed = sanitize_fitness([np.nan, np.nan, np.inf], 3)
    assert failed.all() and np.all(values == ALL_FAILED_FITNESS)


def test_wrong_length_is_refused():
    with pytest.raises(ValueError):
        sanitize_fitness([1.0, 2.0], 3)


def test_cost_is_negated_reward():
    assert np.array_equal(to_cost(np.array([1.0, -2.0])), np.array([-1.0, 2.0]))


def test_centered_ranks_span_and_order():
    shaped = centered_ranks(np.array([3.0, -1.0, 10.0, 0.0]))
    assert shaped.tolist() == pytest.approx([1 / 6, -0.5, 0.5, -1 / 6])
    ties = centered_ranks(np.array([1.0, 1.0, 2.0]))
    assert ties[0] == ties[1] and ties[2] == 0.5
