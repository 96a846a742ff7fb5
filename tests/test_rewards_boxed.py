"""last_boxed: nesting, last box wins, \\fbox, malformed boxes, long input."""

import time

import pytest

from essa.rewards import last_boxed


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{5}.", "5"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("\\fbox{7}", "7"),
        ("\\boxed{3} and \\fbox{4}", "4"),
        ("\\boxed 5$", "5"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed{\\text{(A)}} \\boxedx", "\\text{(A)}"),
        ("\\boxed{}", ""),
        ("no box here", None),
        ("\\boxed{\\frac{1}{2}", None),  # truncated: the last box never closes
        ("\\boxed{1} then \\boxed{2", None),
        ("\\boxed", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_last_boxed_is_linear_on_hostile_input():
    texts = ["x" * 100_000, "\\boxed{" * 20_000, "{" * 100_000 + "\\boxed{" + "{" * 100_000, "\\" * 100_000]
    start = time.perf_counter()
    for text in texts:
        last_boxed(text)
    assert time.perf_counter() - start < 1.0
