"""Accuracy metrics over scored samples: greedy accuracy, avg@k and the unbiased pass@k.

In :func:`summarize_scores` a sample counts as correct when its reward is at least
``correct_at`` (1.0 by default), so a partial format reward never counts as a solve; greedy
accuracy, avg@k and pass@k are all over that 0/1 correctness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` are correct.

    Chen et al. 2021 (Codex paper): 1 - C(n-c, k) / C(n, k), computed as the stable product
    1 - prod_{i=n-c+1}^{n} (1 - k / i), which never forms the huge binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0  # every draw of k samples contains a correct one
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def avg_at_k(scores: Sequence[float], k: int | None = None) -> float:
    """Mean reward of the first ``k`` samples of one item (all of them when ``k`` is None)."""
    used = list(scores) if k is None else list(scores)[:k]
    if not used or (k is not None and len(used) < k):
        raise ValueError(f"avg@k needs at least k={k} samples, got {len(scores)}")
    return sum(used) / len(used)


@dataclass(frozen=True)
class ScoreSummary:
    """Dataset-level metrics; a field is None when the scores needed for it were not given."""

    items: int
    k: int | None
    greedy_accuracy: float | None
    avg_at_k: float | None
    pass_at_k: float | None

    def as_dict(self) -> dict:
        """Plain dict for logging and JSON."""
        return asdict(self)


def summarize_scores(
    sample_scores: Sequence[Sequence[float]] | None = None,
    k: int | None = None,
    greedy_scores: Sequence[float] | None = None,
    correct_at: float = 1.0,
) -> ScoreSummary:
    """Aggregate per-item rewards into greedy accuracy, avg@k and pass@k.

    Args:
        sample_scores: per item, the rewards of its n sampled completions (n >= k).
        k: samples per item for avg@k and pass@k; defaults to the smallest n.
        greedy_scores: per item, the reward of its greedy completion.
        correct_at: a reward at least this counts as correct for accuracy and pass@k.
    """
    if sample_scores is None and greedy_scores is None:
        raise ValueError("give sample_scores, greedy_scores or both")
    greedy = None
    if greedy_scores is not None:
        greedy = _mean([1.0 if s >= correct_at else 0.0 for s in greedy_scores])
    avg = passed = None
    if sample_scores is not None:
        k = k if k is not None else min((len(s) for s in sample_scores), default=0)
        correct = [[1.0 if x >= correct_at else 0.0 for x in s] for s in sample_scores]
        avg = _mean([avg_at_k(c, k) for c in correct])
        passed = _mean([pass_at_k(len(c), int(sum(c)), k) for c in correct])
    items = len(sample_scores) if sample_scores is not None else len(greedy_scores)
    if sample_scores is not None and greedy_scores is not None and len(greedy_scores) != items:
        raise ValueError(f"{len(greedy_scores)} greedy scores for {items} items")
    return ScoreSummary(items=items, k=k, greedy_accuracy=greedy, avg_at_k=avg, pass_at_k=passed)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
