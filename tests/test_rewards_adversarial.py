"""Hostile completions score 0.0 within the time limit: no hang, no crash, any thread."""

import threading
import time

import pytest

from essa.rewards import get_reward
from essa.rewards.verify_pool import shared_pool

LIMIT_S = 2.0
# Start-up of a replacement worker (imports sympy) is not part of an item's limit: allow for it.
SLACK_S = 15.0

HOSTILE = {
    "long": "x" * 100_000,
    "long_with_box": "y" * 100_000 + "\\boxed{" + "z" * 100_000 + "}",
    "nested_boxes": "\\boxed{" * 5_000 + "1" + "}" * 5_000,
    "deep_braces": "\\boxed{" + "{" * 50_000 + "}" * 50_000 + "}",
    "deep_braces_short": "\\boxed{" + "{" * 450 + "1" + "}" * 450 + "}",
    "deep_fractions": "\\boxed{" + "\\frac{1}{" * 120 + "2" + "}" * 120 + "}",
    "power_tower": "\\boxed{10^{10^{10^{10}}}}",
    "unbalanced": "\\boxed{\\frac{1}{2",
    "unbalanced_left": "\\boxed{\\left( 1, 2 \\right]}",
    "binary": bytes(range(256)).decode("latin-1") * 200,
    "empty": "",
}


@pytest.fixture(scope="module")
def math_reward():
    return get_reward("math", timeout_s=LIMIT_S)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_completion_scores_zero_in_time(math_reward, name):
    start = time.monotonic()
    assert math_reward([HOSTILE[name]], ["5"]) == [0.0]
    assert time.monotonic() - start < LIMIT_S + SLACK_S


def test_timed_out_worker_is_replaced(math_reward):
    pool = shared_pool(1, 4096)
    before = pool.restarts
    assert math_reward([HOSTILE["power_tower"], "\\boxed{\\sqrt{4}}"], ["5", "2"]) == [0.0, 1.0]
    assert pool.restarts == before + 1


def test_hostile_items_do_not_spoil_the_batch(math_reward):
    completions = ["\\boxed{\\frac{1}{2}}", HOSTILE["power_tower"], "\\boxed{0.5}", HOSTILE["binary"]]
    start = time.monotonic()
    scores = math_reward(completions, ["0.5", "1", "\\frac12", "1"])
    assert scores == [1.0, 0.0, 1.0, 0.0]
    assert time.monotonic() - start < LIMIT_S + SLACK_S


@pytest.mark.parametrize("name", ["gsm8k", "arithmetic"])
def test_numeric_rewards_survive_hostile_text(name):
    reward = get_reward(name)
    start = time.monotonic()
    assert reward(list(HOSTILE.values()), ["5"] * len(HOSTILE)) == [0.0] * len(HOSTILE)
    # numbers past Python's 4,300-digit int() limit are no answer, not a crash
    huge = ["#### " + "9" * 5_000 + "\n", "the answer is " + "9" * 5_000, "#### 1" + "0" * 5_000]
    assert reward(huge, ["5", "5", "5"]) == [0.0, 0.0, 0.0]
    if name == "gsm8k":
        assert get_reward(name, mode="flexible")(huge[1:2], ["5"]) == [0.0]
    assert time.monotonic() - start < 2.0


def test_math_reward_works_from_a_worker_thread(math_reward):
    results = []

    def score():
        results.append(math_reward(["\\boxed{\\frac{1}{2}}", HOSTILE["power_tower"]], ["0.5", "1"]))

    thread = threading.Thread(target=score)
    thread.start()
    thread.join(timeout=LIMIT_S + SLACK_S + 10)
    assert not thread.is_alive()
    assert results == [[1.0, 0.0]]
