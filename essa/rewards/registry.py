"""Look rewards up by name: the built-in ones, or a user's ``"module:function"``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from essa.rewards.arithmetic import make_arithmetic_reward
from essa.rewards.gsm8k import make_gsm8k_reward
from essa.rewards.ifeval import make_ifeval_reward  # light: its checkers are imported on first use
from essa.rewards.math_reward import make_math_reward
from essa.rewards.user_reward import load_user_reward

RewardFn = Callable[..., list[float]]
"""``reward(completions, answers, prompts=None) -> scores``: one float per completion (1.0
correct, 0.0 wrong or unscorable). ``prompts`` are the items' question texts; a reward that does
not need them ignores them."""


BUILT_IN: dict[str, Callable[..., RewardFn]] = {
    "arithmetic": make_arithmetic_reward,
    "gsm8k": make_gsm8k_reward,
    "ifeval": make_ifeval_reward,
    "math": make_math_reward,
}


def check_reward_options(name: str, options: dict) -> None:
    """Raise ValueError naming the option when a built-in reward does not take it (a config
    check that needs no reward built); a user reward's options are its own business."""
    if name not in BUILT_IN:
        return
    allowed = inspect.signature(BUILT_IN[name]).parameters
    for key in options:
        if key not in allowed:
            raise ValueError(f"reward {name!r} has no option {key!r}; its options are "
                             f"{', '.join(allowed) or 'none'}")


def get_reward(name: str, **options) -> RewardFn:
    """Return the reward called ``name`` built with ``options``.

    ``name`` is a built-in reward (``arithmetic``, ``gsm8k``, ``ifeval``, ``math``; see
    docs/rewards.md for their options) or ``"module:function"`` for a user reward, whose options
    are passed to it on every call. The result maps ``(completions, answers, prompts=None)`` to
    one float per completion.
    """
    if name in BUILT_IN:
        try:
            return BUILT_IN[name](**options)
        except TypeError as error:
            raise TypeError(f"reward {name!r}: {error}") from error
    if ":" in name:
        return load_user_reward(name, **options)
    known = ", ".join(sorted(BUILT_IN))
    raise ValueError(f"unknown reward {name!r}: use one of {known} or 'module:function'")
