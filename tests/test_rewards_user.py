"""User rewards named "module:function": loading errors and output validation."""

import sys
import textwrap

import pytest

from essa.rewards import UserRewardError, get_reward


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    source = textwrap.dedent(
        """
        def length_bonus(completions, answers, scale=1.0):
            return [scale * len(c) / 10 for c in completions]

        def sometimes_none(completions, answers):
            return [None if c == "?" else 1 for c in completions]

        def nan_score(completions, answers):
            return [float("nan")] * len(completions)

        def too_short(completions, answers):
            return [1.0]

        def not_numbers(completions, answers):
            return ["yes"] * len(completions)

        def booleans(completions, answers):
            return [True] * len(completions)

        def not_a_list(completions, answers):
            return 1.0

        NOT_CALLABLE = 3
        """
    )
    (tmp_path / "my_rewards.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def test_user_reward_is_called_with_options(user_module):
    reward = get_reward(f"{user_module}:length_bonus", scale=2.0)
    assert reward(["12345", ""], ["a", "b"]) == [1.0, 0.0]


def test_none_and_nan_mean_unscorable(user_module):
    assert get_reward(f"{user_module}:sometimes_none")(["?", "ok"], ["", ""]) == [0.0, 1.0]
    assert get_reward(f"{user_module}:nan_score")(["a"], ["b"]) == [0.0]


@pytest.mark.parametrize(
    "name, message",
    [
        ("too_short", "1 scores for 2"),
        ("not_numbers", "not a number"),
        ("booleans", "not a number"),
        ("not_a_list", "expected a list"),
    ],
)
def test_bad_outputs_raise_naming_the_function(user_module, name, message):
    reward = get_reward(f"{user_module}:{name}")
    with pytest.raises(UserRewardError, match=message) as error:
        reward(["a", "b"], ["x", "y"])
    assert f"{user_module}:{name}" in str(error.value)


def test_load_errors_name_module_and_attribute(user_module):
    with pytest.raises(UserRewardError, match="cannot import module 'no_such_module_xyz'"):
        get_reward("no_such_module_xyz:score")
    with pytest.raises(UserRewardError, match="no attribute 'missing'"):
        get_reward(f"{user_module}:missing")
    with pytest.raises(UserRewardError, match="not callable"):
        get_reward(f"{user_module}:NOT_CALLABLE")
    with pytest.raises(UserRewardError, match="module:function"):
        get_reward(":score")
