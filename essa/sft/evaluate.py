"""Validation accuracy before and after SFT: the base model, then the base plus the adapter.

The inference engine of the config scores both when it can apply a PEFT adapter folder; when it
cannot (``NotImplementedError``), or when asked, plain transformers greedy decoding does. Both
paths score with the task's own reward, through :func:`essa.evaluation.evaluate.score_completions`.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from essa.engines.base import Completion
from essa.data import build_prompts, load_task
from essa.engines import make_engine, sampling_from_config
from essa.engines.factory import stop_rule_for
from essa.engines.stop_rules import cut_text
from essa.evaluation.evaluate import score_completions
from essa.models import resolve_model_path
from essa.rewards import get_reward
from essa.sft.data import end_of_turn_id

BACKENDS = ("auto", "engine", "transformers")


def hf_greedy_completions(model, tokenizer, prompts: list[str], max_tokens: int, stop_id: int,
                          add_special_tokens: bool = False, batch_size: int = 64) -> list[Completion]:
    """Greedy completions of ``prompts`` with a transformers model, left-padded batches built on the
    model's device (a model on a GPU gets GPU tensors)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_id
    device = getattr(model, "device", "cpu")
    out: list[Completion] = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        rows = [tokenizer(p, add_special_tokens=add_special_tokens).input_ids
                for p in prompts[start:start + batch_size]]
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)  # (B, T)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        with torch.no_grad():
            generated = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                       max_new_tokens=max_tokens, do_sample=False,
                                       eos_token_id=stop_id, pad_token_id=pad_id)
        for row in generated[:, width:].tolist():  # new tokens only
            new = row[: row.index(stop_id) + 1] if stop_id in row else row
            out.append(Completion(tokenizer.decode(new, skip_special_tokens=True), len(new)))
    return out


def _transformers_completions(config, candidates: list, prompts: list[str]):
    """Completions [candidate][prompt] with transformers; an adapter is merged into a fresh base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer


    path = str(resolve_model_path(config.model.path))
    tokenizer = AutoTokenizer.from_pretrained(path)
    stop_id = end_of_turn_id(tokenizer, config.model.chat_template)
    plain = not (config.model.chat_template and getattr(tokenizer, "chat_template", None))
    out = []
    for candidate in candidates:
        # float32: bf16 matmuls on the CPU are slower, and greedy ties differ less from training
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        if candidate is not None:  # merging writes into the base weights: a fresh base each time
            model = PeftModel.from_pretrained(model, str(candidate)).merge_and_unload()
        out.append(hf_greedy_completions(model, tokenizer, prompts, config.engine.max_tokens,
                                         stop_id, add_special_tokens=plain))
    return out


def _engine_completions(config, candidates: list, prompts: list[str], reward: str | None = None):
    """Completions [candidate][prompt] from the configured engine (raises if it cannot apply
    adapters); ``reward``: the task's reward name (its stop rule, engine.stop_at_answer)."""

    engine = make_engine(config.model, config.engine, adapter_cfg=config.adapter,
                         planned_tokens=len(candidates) * len(prompts) * config.engine.max_tokens)
    try:
        per_candidate = engine.generate(prompts, [None if c is None else str(c) for c in candidates],
                                        sampling_from_config(config.engine, reward, config.task.reward_options))
    finally:
        engine.close()
    return [[cs[0] for cs in candidate] for candidate in per_candidate]


def evaluate_candidates(config, candidates: list, limit: int, backend: str = "auto") -> dict:
    """Greedy accuracy of each candidate (None: the base model; else an adapter folder) on the first
    ``limit`` items of the validation split.

    ``backend``: ``engine`` (the config's inference engine), ``transformers``, or ``auto`` (the
    engine, falling back to transformers when the engine cannot apply an adapter folder).
    """
    from transformers import AutoTokenizer


    if backend not in BACKENDS:
        raise ValueError(f"eval backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    t0 = time.time()
    task = load_task(config.task)
    examples = task.split(config.task.validation_split)[:limit]
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(config.model.path)))
    prompts = build_prompts(tokenizer, examples, task.instruction, config.model.chat_template)
    used = config.engine.backend
    if backend == "transformers":
        used, completions = "transformers", _transformers_completions(config, candidates, prompts)
    else:
        try:
            completions = _engine_completions(config, candidates, prompts, task.reward)
        except NotImplementedError:
            if backend == "engine":
                raise
            used, completions = "transformers", _transformers_completions(config, candidates, prompts)
    rule = stop_rule_for(config.engine, task.reward, config.task.reward_options)
    if used == "transformers" and rule is not None:  # generated without the stop: cut the same way
        completions = [[Completion(cut_text(rule, c.text), c.num_tokens) for c in cs] for cs in completions]
    reward = get_reward(task.reward, **config.task.reward_options)
    scores = [score_completions(reward, [[c] for c in cs], examples) for cs in completions]
    return {"backend": used, "split": config.task.validation_split, "items": len(examples),
            "reward": task.reward, "accuracies": [_accuracy(s) for s in scores],
            "seconds": round(time.time() - t0, 1),
            "first_completions": [cs[0].text if cs else "" for cs in completions]}


def evaluate_before_after(config, adapter_dir: str | Path, limit: int, backend: str = "auto") -> dict:
    """:func:`evaluate_candidates` of the base model and base + ``adapter_dir``, with
    ``base_accuracy`` and ``sft_accuracy`` named."""
    result = evaluate_candidates(config, [None, Path(adapter_dir)], limit, backend)
    result["base_accuracy"], result["sft_accuracy"] = result["accuracies"]
    return result


def _accuracy(scores: list[list[float]]) -> float:
    return sum(s[0] for s in scores) / max(len(scores), 1)
