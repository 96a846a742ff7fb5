"""SFT examples as token ids: the prompt (masked out of the loss) followed by the answer and a stop token.

The prompt is tokenised on its own, exactly as the inference engine tokenises it, and the target
(the reference solution plus the end-of-turn token) is tokenised separately and appended: the model
learns the continuation it will be asked to produce, token for token. Labels are ``-100`` on the
prompt (and on padding), so the loss covers the answer tokens and the stop token only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from essa.data.example import Example
from essa.data.prompts import build_prompt

IGNORE_INDEX = -100  # torch's cross_entropy skips these targets
_SENTINEL = "ESSA-SFT-SENTINEL"


@dataclass(frozen=True)
class TokenizedExample:
    """One training sequence: ``input_ids`` (prompt + target) and ``labels`` of the same length."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_target_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def end_of_turn_id(tokenizer, chat_template: bool = True) -> int:
    """The token that ends an assistant turn (the one generation stops on).

    With a chat template it is the first token the template writes after the assistant's text
    (``<|im_end|>`` for SmolLM2 and Qwen, ``<|eot_id|>`` for Llama 3); otherwise the EOS token.
    """
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}],
            tokenize=False)
        suffix = text.rsplit(_SENTINEL, 1)[-1].lstrip(" ")
        ids = tokenizer(suffix, add_special_tokens=False).input_ids if suffix else []
        if ids and ids[0] in set(tokenizer.all_special_ids):
            return int(ids[0])
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither a chat template end-of-turn token nor an EOS "
                         "token: SFT cannot teach the model to stop")
    return int(tokenizer.eos_token_id)


def tokenize_example(tokenizer, prompt: str, target: str, stop_id: int, max_length: int,
                     add_special_tokens: bool = False) -> TokenizedExample:
    """Prompt ids (labels -100) + target ids + ``stop_id`` (labels = the ids), cut to ``max_length``.

    ``add_special_tokens`` applies to the prompt only: a chat-templated prompt already carries its
    special tokens, a plain one gets the tokenizer's (a BOS), as the inference engine adds them.
    Truncation keeps the start of the sequence, so a long prompt loses answer tokens first; a
    sequence left with no answer token contributes nothing to the loss.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=add_special_tokens).input_ids
    target_ids = tokenizer(target, add_special_tokens=False).input_ids + [stop_id]
    input_ids = (prompt_ids + target_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + target_ids)[:max_length]
    return TokenizedExample(input_ids=input_ids, labels=labels)


def sft_target(example: Example) -> str:
    """What the model is taught to answer: the reference solution, else the bare gold answer."""
    return example.solution.strip() or example.answer.strip()


def tokenize_examples(tokenizer, examples: list[Example], instruction: str, chat_template: bool,
                      max_length: int) -> list[TokenizedExample]:
    """Every example as a training sequence, in order."""
    stop_id = end_of_turn_id(tokenizer, chat_template)
    templated = chat_template and bool(getattr(tokenizer, "chat_template", None))
    return [tokenize_example(tokenizer, build_prompt(tokenizer, e.question, instruction, chat_template),
                             sft_target(e), stop_id, max_length, add_special_tokens=not templated)
            for e in examples]


def batch_indices(num_examples: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Indices of each step's batch: a seeded shuffle, walked in order, reshuffled each epoch."""
    rng = np.random.default_rng([seed, 0x5F7])
    order: list[int] = []
    batches = []
    for _ in range(steps):
        while len(order) < batch_size:
            order.extend(int(i) for i in rng.permutation(num_examples))
        batches.append(order[:batch_size])
        order = order[batch_size:]
    return batches


def collate(batch: list[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors (B, T): input_ids, attention_mask, labels (-100 on padding)."""
    width = max(len(x.input_ids) for x in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, x in enumerate(batch):
        n = len(x.input_ids)
        input_ids[row, :n] = torch.tensor(x.input_ids)
        labels[row, :n] = torch.tensor(x.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
