"""Rewards written by users, named ``"package.module:function"``.

The function has the built-in signature ``fn(completions, answers, **options) -> list``, or
``fn(completions, answers, prompts=None, **options)`` to see each item's question text (a
function is given ``prompts`` when it names that parameter or takes ``**kwargs``; two-argument
functions written before prompts existed keep working). It may return ``None`` for an item it
cannot score (it counts as 0.0, as in TRL's reward functions).
Its outputs are checked on every call: a wrong length or a non-number is a bug in the user's
code and raises, naming the function, rather than silently corrupting the fitness.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Sequence

from essa.rewards.batch import checked_batch, checked_prompts


class UserRewardError(Exception):
    """A user reward could not be loaded, or returned something that is not a list of scores."""


def load_user_reward(spec: str, **options) -> Callable[[list[str], list[str]], list[float]]:
    """Import ``"module:function"`` and wrap it so its outputs are validated.

    ``options`` are passed to the function as keyword arguments on every call.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UserRewardError(f"a user reward is named 'module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserRewardError(f"user reward {spec!r}: cannot import module {module_name!r} ({error})") from error
    function = module
    for part in attribute.split("."):
        if not hasattr(function, part):
            raise UserRewardError(f"user reward {spec!r}: module {module_name!r} has no attribute {attribute!r}")
        function = getattr(function, part)
    if not callable(function):
        raise UserRewardError(f"user reward {spec!r}: {attribute!r} is not callable")
    return UserReward(spec, function, options)


class UserReward:
    """A user function behind the reward contract: checked inputs, validated float outputs."""

    def __init__(self, spec: str, function: Callable, options: dict):
        self.spec, self.function, self.options = spec, function, options
        self.takes_prompts = takes_prompts(function)

    def __call__(self, completions: Sequence[str], answers: Sequence[str],
                 prompts: Sequence[str] | None = None) -> list[float]:
        texts, golds = checked_batch(completions, answers)
        questions = checked_prompts(prompts, len(texts))
        if self.takes_prompts:
            raw = self.function(texts, golds, prompts=questions, **self.options)
        else:
            raw = self.function(texts, golds, **self.options)
        return validated_scores(raw, len(texts), self.spec)

    def __repr__(self) -> str:
        return f"UserReward({self.spec!r})"


def takes_prompts(function: Callable) -> bool:
    """Whether ``function`` accepts a ``prompts`` keyword (named, or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: call them the old way
        return False
    return any(p.name == "prompts" and p.kind is not p.POSITIONAL_ONLY or p.kind is p.VAR_KEYWORD
               for p in parameters)


def validated_scores(raw: object, expected: int, spec: str) -> list[float]:
    """Turn a user function's output into ``expected`` floats; None and NaN become 0.0."""
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise UserRewardError(f"user reward {spec!r} returned {type(raw).__name__}, expected a list of floats")
    if len(raw) != expected:
        raise UserRewardError(f"user reward {spec!r} returned {len(raw)} scores for {expected} completions")
    return [_score(value, position, spec) for position, value in enumerate(raw)]


def _score(value: object, position: int, spec: str) -> float:
    if value is None:
        return 0.0  # the function could not score this item
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        # bool is rejected too: True from a checker is almost always a missing float().
        raise UserRewardError(f"user reward {spec!r}: score {position} is {value!r}, not a number")
    value = float(value)
    return 0.0 if math.isnan(value) else value
