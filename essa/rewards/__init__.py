"""Verifiable rewards: ``get_reward(name, **options)(completions, answers) -> list[float]``.

Light on purpose: nothing here imports torch, transformers or vLLM (MPI master processes import
it), and math-verify runs only inside worker processes started on first use.
"""

from essa.rewards.boxed import last_boxed
from essa.rewards.registry import BUILT_IN, RewardFn, get_reward
from essa.rewards.user_reward import UserRewardError

__all__ = ["BUILT_IN", "RewardFn", "UserRewardError", "get_reward", "last_boxed"]
