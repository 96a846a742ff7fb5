"""Calibration texts for ``essa quantize --calibrate``: a seeded sample of the run's train split.

GPTQ and SmoothQuant fit the quantized weights to the activations of real inputs, so the inputs
are what the model will see in the run: the task's prompt in the chat template, followed by the
reference answer (the SFT target), as one text. Only the train split is drawn from, so the
validation and test splits stay unseen; only local files are read (as in training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from essa.data.example import Example
from essa.data.prompts import build_prompt

_STREAM = 0x9A7  # a seed stream of its own: the same seed elsewhere draws other rows


def load_run_config(config):
    """A RunConfig: as given, read from a YAML path, or the defaults (the arithmetic demo task)."""
    from essa.config import RunConfig, load_config
    if isinstance(config, RunConfig):
        return config
    return load_config(config)


def sample_rows(rows: list[Example], samples: int, seed: int) -> list[Example]:
    """``samples`` distinct rows drawn with ``seed`` (all of them when there are fewer), in
    split order."""
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    rng = np.random.default_rng([seed, _STREAM])
    chosen = rng.choice(len(rows), size=min(samples, len(rows)), replace=False)
    return [rows[i] for i in sorted(int(i) for i in chosen)]


def calibration_text(tokenizer, example: Example, instruction: str, chat_template: bool) -> str:
    """The prompt exactly as the engine sees it, then the reference answer."""
    answer = example.solution.strip() or example.answer.strip()  # as essa.sft.data.sft_target
    return build_prompt(tokenizer, example.question, instruction, chat_template) + answer


def calibration_set(config, model_path: Path, samples: int, seed: int) -> tuple[list[str], dict]:
    """(texts, record for the manifest) drawn from ``config``'s task's train split."""
    from transformers import AutoTokenizer

    from essa.data import load_task
    config = load_run_config(config)
    task = load_task(config.task)
    rows = task.split(config.task.train_split)
    if not rows:
        raise ValueError(f"task {task.name!r}: the {config.task.train_split!r} split is empty; "
                         f"nothing to calibrate on")
    chosen = sample_rows(rows, samples, seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    texts = [calibration_text(tokenizer, e, task.instruction, config.model.chat_template)
             for e in chosen]
    record = {"dataset": task.name, "split": config.task.train_split, "samples": len(texts),
              "seed": seed}
    return texts, record
