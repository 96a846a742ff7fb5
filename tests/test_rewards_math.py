"""The math reward: box extraction policy, equivalences through math-verify, fast path."""

import subprocess
import sys

import pytest

from essa.rewards import get_reward
from essa.rewards.fast_path import fast_verdict


@pytest.fixture(scope="module")
def math_reward():
    return get_reward("math", timeout_s=10.0)


EQUIVALENT = [
    ("\\frac{14}{3}", "\\dfrac{14}{3}"),
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("[2,5)", "[2, 5)"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("30^\\circ", "30"),
    ("\\text{Evelyn}", "Evelyn"),
    ("\\$18.90", "18.90"),
    ("x^2+2x+1", "(x+1)^2"),
    ("3.50", "3.5"),
]
DIFFERENT = [
    ("\\frac{14}{3}", "\\frac{3}{14}"),
    ("[2,5)", "(2,5)"),
    ("(1,2)", "(2,1)"),
    ("2\\sqrt{2}", "\\sqrt{2}"),
    ("5", "6"),
    ("\\text{Evelyn}", "Bob"),
]


def test_equivalent_forms_score_one(math_reward):
    golds = [g for g, _ in EQUIVALENT]
    completions = [f"So the answer is $\\boxed{{{p}}}$." for _, p in EQUIVALENT]
    assert math_reward(completions, golds) == [1.0] * len(EQUIVALENT)


def test_different_answers_score_zero(math_reward):
    golds = [g for g, _ in DIFFERENT]
    completions = [f"\\boxed{{{p}}}" for _, p in DIFFERENT]
    assert math_reward(completions, golds) == [0.0] * len(DIFFERENT)


def test_last_box_counts_and_fbox_is_a_box(math_reward):
    completions = ["\\boxed{3} no wait \\boxed{4}", "\\boxed{4} no wait \\boxed{3}", "\\fbox{4}"]
    assert math_reward(completions, ["4", "4", "4"]) == [1.0, 0.0, 1.0]


def test_no_box_scores_zero_unless_fallback_is_on(math_reward):
    completion = "Adding them up, the final answer is $\\frac{1}{2}$."
    assert math_reward([completion], ["0.5"]) == [0.0]
    fallback = get_reward("math", fallback_unboxed=True, timeout_s=10.0)
    assert fallback([completion, "I don't know"], ["0.5", "0.5"]) == [1.0, 0.0]


def test_gold_may_be_a_full_solution(math_reward):
    solution = "We compute $1+1$ and get $\\boxed{2}$."
    assert math_reward(["\\boxed{2}", "\\boxed{3}"], [solution, solution]) == [1.0, 0.0]


def test_format_reward_for_boxed_wrong_answers():
    reward = get_reward("math", format_reward=0.2, timeout_s=10.0)
    assert reward(["\\boxed{1}", "\\boxed{2}", "1"], ["1", "1", "1"]) == [1.0, 0.2, 0.0]


def test_fast_path_verdicts():
    assert fast_verdict("\\frac{1}{2}", " \\dfrac{1}{2} ") is True
    assert fast_verdict("\\left(1,2\\right)", "(1, 2)") is True
    assert fast_verdict("12", "13") is False
    assert fast_verdict("\\frac{14}{3}", "6") is False
    assert fast_verdict("\\frac{14}{3}", "\\frac{28}{6}") is True
    assert fast_verdict("-\\frac{1}{2}", "\\frac{-1}{2}") is True
    assert fast_verdict("\\frac{1}{0}", "5") is None
    assert fast_verdict("3.50", "3.5") is True
    assert fast_verdict("\\frac{1}{2}", "0.5") is None  # needs math-verify
    assert fast_verdict("\\rightarrow", "\\to") is None  # \right inside a word is not sizing


def test_importing_rewards_stays_light():
    code = (
        "import sys, essa.rewards; "
        "heavy = [m for m in ('torch', 'transformers', 'vllm', 'sympy', 'math_verify') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
