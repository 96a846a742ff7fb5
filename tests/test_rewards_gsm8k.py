"""gsm8k and arithmetic rewards: number formats, strict vs flexible, gold forms, format reward."""

import pickle

import pytest

from essa.rewards import get_reward


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("So she pays 1234 in all.\n#### 1,234", "1234"),
        ("#### 1234", "1,234"),
        ("#### $1,234.50", "1234.5"),
        ("#### 3.50", "3.5"),
        ("#### 18.", "18"),
        ("#### -7", "-7"),
        ("#### $-7", "-7"),
        ("#### -$7", "-7"),
        ("#### +7", "7"),
        ("####42", "42"),
        ("#### 0.5 dollars", ".5"),
        ("She has 5 apples.\n#### 5\n", "Natalia sold 48/2 = 24 clips.\n#### 5"),
    ],
)
def test_strict_accepts_each_number_format(completion, gold):
    assert get_reward("gsm8k")([completion], [gold]) == [1.0]


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("#### 1,235", "1234"),
        ("#### 7", "-7"),
        ("#### 3.51", "3.5"),
        ("#### 12", "1,2"),  # "1,2" is not a number: the gold is unscorable
        ("The answer is 42.", "42"),  # no marker at all
        ("#### 42\nOn second thought:\n#### the answer", "42"),  # the last marker counts
        ("#### 41\n#### 42 wait\n#### 43", "42"),
        ("#### x = 42", "42"),  # strict: the number must follow the marker
    ],
)
def test_strict_rejects_wrong_or_unmarked(completion, gold):
    assert get_reward("gsm8k")([completion], [gold]) == [0.0]


def test_last_marker_wins_over_earlier_ones():
    assert get_reward("gsm8k")(["#### 41\nno, better:\n#### 42"], ["42"]) == [1.0]


def test_flexible_takes_the_last_number():
    reward = get_reward("gsm8k", mode="flexible")
    completions = ["3 + 4 = 7, so the answer is 7.", "5-3=2", "It costs $1,234.", "#### 9 or maybe 8"]
    assert reward(completions, ["7", "2", "1234", "9"]) == [1.0, 1.0, 1.0, 0.0]
    # strict and flexible disagree exactly where there is no (or a different) marker
    assert get_reward("gsm8k", mode="strict")(completions, ["7", "2", "1234", "9"]) == [0.0, 0.0, 0.0, 1.0]


def test_format_reward_is_partial_and_off_by_default():
    completions, golds = ["#### 5", "#### 6", "6"], ["5", "5", "5"]
    assert get_reward("gsm8k")(completions, golds) == [1.0, 0.0, 0.0]
    assert get_reward("gsm8k", format_reward=0.1)(completions, golds) == [1.0, 0.1, 0.0]
    with pytest.raises(ValueError):
        get_reward("gsm8k", format_reward=1.0)


def test_arithmetic_shares_strict_rules_and_needs_integer_gold():
    reward = get_reward("arithmetic")
    completions = ["12 + 30 = 42\n#### 42", "#### -17", "#### 42.0", "42", "#### 1,000", "#### 1.5"]
    golds = ["42", "-17", "42", "42", "1000", "1.5"]
    assert reward(completions, golds) == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]


def test_bad_mode_and_unknown_option_raise_clearly():
    with pytest.raises(ValueError, match="strict"):
        get_reward("gsm8k", mode="loose")
    with pytest.raises(TypeError, match="gsm8k"):
        get_reward("gsm8k", bogus=1)
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward("nosuchreward")


def test_inputs_are_checked_but_odd_completions_score_zero():
    reward = get_reward("gsm8k")
    assert reward([None, 5, "#### 5"], ["5", "5", 5]) == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        reward(["#### 1"], ["1", "2"])


def test_rewards_pickle_for_shipping_to_other_ranks():
    reward = pickle.loads(pickle.dumps(get_reward("gsm8k", mode="flexible")))
    assert reward(["so 8"], ["8"]) == [1.0]
