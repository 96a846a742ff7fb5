"""Tasks and data: known benchmark loaders, local files, the synthetic arithmetic demo task,
prompt building and the seeded mini-batch sampler."""

from essa.data.example import Example
from essa.data.loading import KNOWN_DATASETS, TaskData, load_split, load_task
from essa.data.prompts import build_prompt, build_prompts
from essa.data.sampler import BatchSampler

__all__ = ["Example", "KNOWN_DATASETS", "TaskData", "load_split", "load_task", "build_prompt",
           "build_prompts", "BatchSampler"]
