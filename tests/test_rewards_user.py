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

        def mentions_question(completions, answers, prompts=None):
            return [float(p.split()[0].rstrip("?") in c) for c, p in zip(completions, prompts)]

        def keyword_catch_all(completions, answers, **extra):
            return [float(len(extra["prompts"][i])) for i in range(len(completions))]

        def prompts_and_option(completions, answers, prompts=None, weight=1.0):
            return [weight * (p is not None) for p in (prompts or [None] * len(completions))]

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


def test_rewards_naming_prompts_receive_the_question_texts(user_module):
    reward = get_reward(f"{user_module}:mentions_question")
    assert reward(["apples are red", "no"], ["", ""], prompts=["apples?", "pears?"]) == [1.0, 0.0]
    assert get_reward(f"{user_module}:keyword_catch_all")(["a", "b"], ["", ""], prompts=["xy", "xyz"]) == [2.0, 3.0]
    # options still arrive beside prompts; without prompts the function is given None
    weighted = get_reward(f"{user_module}:prompts_and_option", weight=0.5)
    assert weighted(["a"], [""], prompts=["q"]) == [0.5]
    assert weighted(["a"], [""]) == [0.0]


def test_two_argument_rewards_keep_working_when_prompts_are_passed(user_module):
    reward = get_reward(f"{user_module}:length_bonus", scale=2.0)
    assert reward(["12345", ""], ["a", "b"], prompts=["p", "q"]) == [1.0, 0.0]


def test_prompts_of_the_wrong_length_or_type_raise(user_module):
    reward = get_reward(f"{user_module}:mentions_question")
    with pytest.raises(ValueError, match="2 completions but 1 prompts"):
        reward(["a", "b"], ["", ""], prompts=["q"])
    with pytest.raises(TypeError, match="list of prompts"):
        reward(["a"], [""], prompts="q")


@pytest.mark.parametrize("name", ["arithmetic", "gsm8k", "math"])
def test_built_in_rewards_accept_and_ignore_prompts(name):
    reward = get_reward(name)
    completions, answers = ["#### 7 so \\boxed{7}", "#### 8 \\boxed{8}"], ["7", "7"]
    assert reward(completions, answers, prompts=["q1", "q2"]) == reward(completions, answers) == [1.0, 0.0]
    with pytest.raises(ValueError, match="prompts"):
        reward(completions, answers, prompts=["q1"])


def test_score_completions_passes_each_items_question(user_module):
    from essa.data.example import Example
    from essa.engines.base import Completion
    from essa.evaluation.evaluate import score_completions

    examples = [Example("a", "apples today?", "1"), Example("b", "pears now?", "2")]
    completions = [[Completion("apples!", 2), Completion("no", 1)], [Completion("pears", 1)]]
    scores = score_completions(get_reward(f"{user_module}:mentions_question"), completions, examples)
    assert scores == [[1.0, 0.0], [1.0]]
