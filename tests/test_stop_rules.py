"""Stop at the answer (engine.stop_at_answer): the text rules, their reward mapping, the engines'
hooks on fakes, and the real engines (vLLM merged and adapter mode, transformers) on SmolLM2."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from essa.config import EngineConfig
from essa.engines.base import SamplingSettings
from essa.engines.factory import sampling_from_config, stop_rule_for
from essa.engines.stop_rules import (ANSWER_LINE, BOXED, answer_line_cut, boxed_cut, cut_position,
                                     cut_text, get_rule, rule_for_reward)
from essa.rewards.boxed import last_boxed
from essa.rewards.numeric_answer import strict_answer

# -- the rules on hand-made texts ----------------------------------------------------------------

ANSWER_TEXTS = [  # (text, cut or None)
    ("20 + 25 = 45\n#### 45\nThe answer is 45.", 21),
    ("#### 45", None),  # the line is not finished: "45" could still become "456"
    ("#### 45\n", 8),
    ("no marker at all\n\n", None),
    ("### 5\n", None),  # three hashes are no marker
    ("####\n#### x\n#### 7.\nrest", 20),  # lines without a number do not decide
    ("a #### 1 #### 2\n#### 3\n", 16),  # the line's last marker is read, as the reward does
    ("#####5\n", 7),
    ("#### $1,234.50 dollars\n", 23),
    ("#### -3\r\nmore", 9),
    ("x\n#### 5\n#### 6\n", 9),  # several answer lines: the first decides
]

BOXED_TEXTS = [  # (text, cut or None, last_boxed of the cut text)
    ("so \\boxed{5}. Then \\boxed{6}", 12, "5"),
    ("\\boxed{\\frac{1}{2}} and more", 19, "\\frac{1}{2}"),
    ("\\boxed{\\frac{1}{2}", None, None),  # unbalanced: still open
    ("\\boxed{a\\}b}", 12, "a\\}b"),  # an escaped brace is content
    ("\\boxed{\\{", None, None),
    ("}}} {{ \\boxed {5}x", 17, "5"),  # stray braces before the box do not count
    ("\\boxed{\\boxed{5}", 16, "5"),  # the inner box closes first
    ("\\boxedx{5} then \\fbox{7}!", 24, "7"),  # \boxedx is another command
    ("\\boxed 5 and on", None, None),  # the brace-less form never cuts
    ("line\\\\\\boxed{9}", 15, "9"),  # "\\" (a line break) right before the box
    ("\\boxed{", None, None),
    ("", None, None),
]


@pytest.mark.parametrize("text,cut", ANSWER_TEXTS)
def test_answer_line_cut(text, cut):
    assert answer_line_cut(text) == cut
    if cut is not None:
        kept = text[:cut]
        assert kept.endswith("\n") and strict_answer(kept) is not None
        # the reward of the cut text reads the first decisive line
        first_line = kept[:-1].rsplit("\n", 1)[-1]
        assert strict_answer(kept) == strict_answer(first_line)


@pytest.mark.parametrize("text,cut,content", BOXED_TEXTS)
def test_boxed_cut(text, cut, content):
    assert boxed_cut(text) == cut
    if cut is not None:
        assert text[:cut].endswith("}") and last_boxed(text[:cut]) == content


@pytest.mark.parametrize("rule,text", [(ANSWER_LINE, t) for t, _ in ANSWER_TEXTS]
                         + [(BOXED, t) for t, _, _ in BOXED_TEXTS])
def test_every_prefix_agrees(rule, text):
    """What an engine sees while generating: the first prefix that is cut, is cut where the whole
    text is, and every longer prefix the same (so the finished text ends where generation stopped)."""
    whole = cut_position(rule, text)
    for end in range(len(text) + 1):
        got = cut_position(rule, text[:end])
        assert got == (whole if whole is not None and end >= whole else None), (text, end)


def test_cut_text_and_rule_names():
    assert cut_text(None, "#### 5\nmore") == "#### 5\nmore"
    assert cut_text(ANSWER_LINE, "#### 5\nmore") == "#### 5\n"
    assert cut_text(ANSWER_LINE, "#### 5") == "#### 5"
    assert cut_text(BOXED, "\\boxed{2} \\boxed{3}") == "\\boxed{2}"
    assert get_rule(BOXED).triggers == "}" and get_rule(ANSWER_LINE).triggers == "\n"
    with pytest.raises(ValueError, match="unknown stop rule"):
        get_rule("regex")


ADVERSARIAL = {
    "open boxes": "\\boxed{" * 14_300,
    "open braces": "{" * 100_000,
    "backslashes": "\\" * 100_000,
    "box commands, spaces": ("\\boxed" + " " * 50) * 1_800,
    "box then spaces": "\\boxed" + " " * 100_000,
    "markers, no newline": "####" * 25_000,
    "long number": "#### " + "1" * 100_000 + "\n",
    "undecided lines": "#### x\n" * 14_300,
    "comma groups": "#### 1" + ",234" * 25_000 + "x\n",
    "close braces": "}" * 100_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_long_hostile_texts_take_linear_time(name):
    text = ADVERSARIAL[name]
    assert len(text) >= 99_000
    for rule in (ANSWER_LINE, BOXED):
        t0 = time.perf_counter()
        cut_position(rule, text)
        assert time.perf_counter() - t0 < 0.5, (name, rule)


def test_rules_of_rewards_and_config():
    assert rule_for_reward("arithmetic") == ANSWER_LINE and rule_for_reward("gsm8k") == ANSWER_LINE
    assert rule_for_reward("math") == BOXED
    for other in ("ifeval", "mypkg.rewards:score", "", None):
        assert rule_for_reward(other) is None
    on, off = EngineConfig(), EngineConfig(stop_at_answer=False)
    assert on.stop_at_answer  # the default
    assert sampling_from_config(on, "gsm8k").stop_rule == ANSWER_LINE
    assert sampling_from_config(on).stop_rule is None  # scored otherwise (e.g. a reward model)
    assert sampling_from_config(off, "math").stop_rule is None
    assert stop_rule_for(on, "math") == BOXED and stop_rule_for(on, "ifeval") is None


# -- the engines' hooks, on a fake tokenizer (one character per token id) ------------------------

class CharTokenizer:
    """Token id = a character's code point; id 0 is the end token (a special token)."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join("" if i == 0 and skip_special_tokens else "<eos>" if i == 0 else chr(i)
                       for i in ids)


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_transformers_stopping_criterion_on_fake_rows():
    torch = pytest.importorskip("torch")
    from essa.engines.hf_engine import _RuleStop
    stop = _RuleStop(ANSWER_LINE, CharTokenizer(), prompt_width=2, token_texts={})
    rows = ["#### 5\nmore", "no answer\n\n", "## 7\n#### 8\n"]
    width = max(len(r) for r in rows)
    prompt = [[1, 1]] * len(rows)
    done_at = {}
    for step in range(1, width + 1):
        batch = torch.tensor([p + ids(r.ljust(width))[:step] for p, r in zip(prompt, rows)])
        for row, flag in enumerate(stop(batch, None).tolist()):
            if flag:
                done_at.setdefault(row, step)
    assert done_at == {0: 7, 2: 12}  # stopped on the token completing the answer line
    assert stop.stopped == {0: 7, 2: 12}


def test_vllm_processor_bookkeeping(monkeypatch):
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

    from essa.engines import vllm_internals as internals

    proc = internals.StopRuleProcessor(SimpleNamespace(model_config=None), torch.device("cpu"), False)
    proc.tokenizer = CharTokenizer()  # what the first tracked request would load

    def params(rule):
        p = SamplingParams(max_tokens=8, extra_args={internals.STOP_RULE_ARG: rule} if rule else None)
        p._eos_token_id = 0
        return p

    outs = [[], [], []]
    proc.update_state(BatchUpdate(3, [], [(0, params(ANSWER_LINE), None, outs[0]),
                                         (1, params(None), None, outs[1]),
                                         (2, params(BOXED), None, outs[2])], []))
    assert sorted(proc.tracked) == [0, 2]
    outs[0] += ids("#### 5\n")
    outs[1] += ids("#### 5\n")
    outs[2] += ids("\\boxed{3")
    proc.update_state(None)
    logits = proc.apply(torch.zeros(3, 200))
    assert torch.isinf(logits[0]).sum() == 199 and logits[0, 0] == 0  # only the end token is left
    assert not torch.isinf(logits[1:]).any()
    # row 0 leaves, row 2 moves into its place; its box closes next
    proc.update_state(BatchUpdate(1, [0], [], [(2, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    outs[2] += ids("}")
    proc.update_state(None)
    logits = proc.apply(torch.zeros(1, 200))
    assert logits[0, 0] == 0 and torch.isinf(logits[0, 1:]).all()
    with pytest.raises(ValueError):
        internals.StopRuleProcessor.validate_params(params("regex"))


# -- real engines on SmolLM2 --------------------------------------------------------------------

@pytest.fixture(scope="module")
def arithmetic_items():
    from essa.config import load_config
    from essa.data import load_task
    root = Path(__file__).resolve().parents[1]
    task = load_task(load_config(root / "launch/configs/demo-cpu.yaml", []).task)
    return task, task.split("validation")[:16]


def compare(full, stopped, reward, golds):
    """Per item: same reward, no more tokens, stopped text a cut of the full one; how many were cut."""
    full_scores = reward([c.text for c in full], golds)
    stopped_scores = reward([c.text for c in stopped], golds)
    assert stopped_scores == full_scores
    cut = 0
    for f, s in zip(full, stopped):
        assert s.num_tokens <= f.num_tokens
        assert f.text.startswith(s.text)
        cut += s.num_tokens < f.num_tokens
    return cut


@pytest.mark.model
@pytest.mark.vllm
def test_vllm_stops_at_the_answer_line(vllm_lora_engine, small_adapter, arithmetic_items):
    from essa.data import build_prompts
    from essa.rewards import get_reward
    task, items = arithmetic_items
    engine, reward = vllm_lora_engine, get_reward("arithmetic")
    prompts = build_prompts(engine.tokenizer, items, task.instruction)
    golds = [e.answer for e in items]
    full_settings = SamplingSettings(max_tokens=48)
    stop_settings = SamplingSettings(max_tokens=48, stop_rule=ANSWER_LINE)
    # merged mode (the base model: one candidate per pass)
    full = [c[0] for c in engine.generate(prompts, [None], full_settings)[0]]
    stopped = [c[0] for c in engine.generate(prompts, [None], stop_settings)[0]]
    assert compare(full, stopped, reward, golds) >= 2  # the base model does write '#### n' lines
    for s in stopped:
        assert answer_line_cut(s.text) in (None, len(s.text))  # ends at the cut, if any
    # adapter mode: the rule rides on LoRA requests too
    few = [i for i, s in enumerate(stopped) if s.num_tokens < full[i].num_tokens][:2] + [0, 1]
    adapter_full = engine.adapter_mode.generate([prompts[i] for i in few], [small_adapter, None],
                                                full_settings)
    adapter_stopped = engine.adapter_mode.generate([prompts[i] for i in few], [small_adapter, None],
                                                   stop_settings)
    assert sum(compare([c[0] for c in per_full], [c[0] for c in per_stopped], reward,
                       [golds[i] for i in few])
               for per_full, per_stopped in zip(adapter_full, adapter_stopped)) >= 1


BOX_SHOTS = ("Problem: What is 2 + 3?\nSolution: 2 + 3 = 5. The answer is $\\boxed{5}$.\n\n"
             "Problem: What is 10 - 4?\nSolution: 10 - 4 = 6. The answer is $\\boxed{6}$.\n\n")


@pytest.mark.model
@pytest.mark.vllm
def test_vllm_stops_after_the_first_box(vllm_lora_engine):
    """A base-model math prompt (few-shot, plain text): the model boxes its answer, then goes on
    with problems of its own; stopped, the completion ends at its first box."""
    from essa.rewards import get_reward
    engine = vllm_lora_engine
    prompts = [BOX_SHOTS + f"Problem: {q}\nSolution:" for q in ("What is 6 times 7?", "What is 15 + 27?")]
    full = [c[0] for c in engine.generate(prompts, [None], SamplingSettings(max_tokens=64))[0]]
    stopped = [c[0] for c in engine.generate(prompts, [None],
                                             SamplingSettings(max_tokens=64, stop_rule=BOXED))[0]]
    cut = 0
    for f, s in zip(full, stopped):
        assert s.num_tokens <= f.num_tokens and s.text == cut_text(BOXED, f.text)
        cut += s.num_tokens < f.num_tokens
    assert cut >= 1
    # the math reward scores the stopped completion as it scores the full one cut by hand
    reward = get_reward("math")
    assert reward([s.text for s in stopped], ["42", "42"]) == \
        reward([cut_text(BOXED, f.text) for f in full], ["42", "42"])


@pytest.mark.model
def test_transformers_engine_stops_at_the_answer_line(demo_model, arithmetic_items):
    import torch

    from essa.config import ModelConfig
    from essa.data import build_prompts
    from essa.engines.hf_engine import TransformersEngine
    from essa.rewards import get_reward
    task, items = arithmetic_items
    items = items[:4]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # several times faster than two on 2 shared cores
    engine = TransformersEngine(demo_model, ModelConfig(path=str(demo_model), dtype="float32"),
                                EngineConfig(max_model_len=512))
    try:
        prompts = build_prompts(engine.tokenizer, items, task.instruction)
        full = [c[0] for c in engine.generate(prompts, [None], SamplingSettings(max_tokens=40))[0]]
        stopped = [c[0] for c in engine.generate(
            prompts, [None], SamplingSettings(max_tokens=40, stop_rule=ANSWER_LINE))[0]]
    finally:
        engine.close()
        torch.set_num_threads(before)
    assert compare(full, stopped, get_reward("arithmetic"), [e.answer for e in items]) >= 1
    for f, s in zip(full, stopped):
        assert s.text == cut_text(ANSWER_LINE, f.text)  # float32: the same tokens up to the cut


def test_gsm8k_flexible_mode_has_no_stop_rule():
    # flexible reads the last number anywhere: a first answer line does not decide it
    from essa.engines.stop_rules import rule_for_reward
    assert rule_for_reward("gsm8k") == "answer_line"
    assert rule_for_reward("gsm8k", {"mode": "flexible"}) is None
    assert rule_for_reward("gsm8k", {"mode": "strict"}) == "answer_line"
