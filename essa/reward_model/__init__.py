"""Reward models as fitness (``fitness.kind: reward_model``): a local Hugging Face
sequence-classification model scores each (question, completion) pair; see docs/fitness.md.

``folder`` reads a folder without torch (the dry-run plan, start-up checks); ``scorer`` loads
the model (workers only): import it as ``essa.reward_model.scorer``.
"""

from essa.reward_model.folder import (RewardModelError, RewardModelInfo, check_reward_model,
                                      estimate_parameters, weight_stats)

__all__ = ["RewardModelError", "RewardModelInfo", "check_reward_model", "estimate_parameters",
           "weight_stats"]
