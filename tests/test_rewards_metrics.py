"""pass@k against a brute-force count over all k-subsets; avg@k; aggregation."""

import itertools

import pytest

from essa.evaluation.metrics import avg_at_k, pass_at_k, summarize_scores


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    draws = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in draw) for draw in draws) / len(draws)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10])
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    value = pass_at_k(1000, 3, 100)
    assert 0.0 < value < 1.0
    assert value == pytest.approx(1 - (900 * 899 * 898) / (1000 * 999 * 998), rel=1e-12)


def test_pass_at_k_rejects_bad_arguments():
    for n, c, k in [(5, 6, 1), (5, 1, 0), (5, 1, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_avg_at_k_uses_the_first_k_samples():
    assert avg_at_k([1.0, 0.0, 1.0, 1.0], 2) == 0.5
    assert avg_at_k([1.0, 0.0, 1.0, 1.0]) == 0.75
    with pytest.raises(ValueError):
        avg_at_k([1.0], 2)


def test_summarize_scores_thresholds_partial_rewards():
    samples = [[1.0, 0.1, 0.0, 0.0], [0.1, 0.1, 0.1, 0.1], [1.0, 1.0, 1.0, 0.0]]
    summary = summarize_scores(samples, k=2, greedy_scores=[1.0, 0.1, 1.0])
    assert summary.items == 3
    assert summary.greedy_accuracy == pytest.approx(2 / 3)
    assert summary.avg_at_k == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    expected_pass = (pass_at_k(4, 1, 2) + 0.0 + pass_at_k(4, 3, 2)) / 3
    assert summary.pass_at_k == pytest.approx(expected_pass)
    assert summary.as_dict()["k"] == 2


def test_summarize_greedy_only_and_mismatch():
    summary = summarize_scores(greedy_scores=[1.0, 0.0, 0.0, 1.0])
    assert (summary.greedy_accuracy, summary.pass_at_k, summary.avg_at_k) == (0.5, None, None)
    with pytest.raises(ValueError):
        summarize_scores([[1.0]], greedy_scores=[1.0, 0.0])
