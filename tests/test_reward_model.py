"""fitness.kind reward_model: the scorer on a tiny randomly initialised Llama reward model with the
demo model's tokenizer (its real chat template), the start-up checks, the baseline, the plan."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from essa.config import ConfigError, load_config
from essa.config.schema import RewardModelConfig
from essa.data.example import Example
from essa.engines.base import Completion, SamplingSettings
from essa.fitness import score_candidates
from essa.reward_model import RewardModelError, check_reward_model, weight_stats
from essa.reward_model.scorer import RewardModelScorer
from tests.conftest import ROOT, run_cli

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
QUESTIONS = ["What is 2 + 3?", "Name a colour.",
             "Write one sentence about the sea, then one about the mountains, and say which you prefer.",
             "Hi"]
ANSWERS = ["5", "Blue is a colour that many people like.", "The sea is wide. Mountains are tall. Sea.",
           "Hello! How can I help you today? I can answer questions, write and explain."]


def tiny_reward_model(folder: Path, tokenizer_dir: Path, labels: list[str] | None = None,
                      seed: int = 0, **tokenizer_settings) -> Path:
    """A 2-layer LlamaForSequenceClassification (random weights, no pad_token_id in its config)
    with the tokenizer files of ``tokenizer_dir``; ``tokenizer_settings`` rewrite
    tokenizer_config.json entries (None removes one)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification
    vocab = json.loads((tokenizer_dir / "config.json").read_text())["vocab_size"]
    labels = labels or ["LABEL_0"]
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         initializer_range=0.2, pad_token_id=None,
                         id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, folder / name)
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    for key, value in tokenizer_settings.items():
        tok_cfg.pop(key, None) if value is None else tok_cfg.__setitem__(key, value)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    return folder


@pytest.fixture(scope="module")
def rm_dir(demo_model, tmp_path_factory) -> Path:
    return tiny_reward_model(tmp_path_factory.mktemp("rm") / "rm", demo_model)


@pytest.fixture(scope="module")
def scorer(rm_dir) -> RewardModelScorer:
    return RewardModelScorer(RewardModelConfig(path=str(rm_dir), dtype="float32", batch_size=3))


def _direct_logits(folder: Path, text: str) -> torch.Tensor:
    """(num_labels,) logits of one text through plain transformers, no padding."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.inference_mode():
        return model(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0]


# ---- the scorer ------------------------------------------------------------------------------

@pytest.mark.parametrize("tokenizer_settings", [{}, {"padding_side": "left", "pad_token": None}],
                         ids=["tokenizer-pads-right", "tokenizer-pads-left-no-pad-token"])
def test_a_pair_scores_the_same_alone_and_in_a_batch(demo_model, tmp_path, tokenizer_settings):
    """Pairs of very different lengths, batch of 3 (so batches mix long and short pairs): every
    score equals the pair scored alone to 1e-5 (float32), whatever the tokenizer's padding side,
    and with no pad token in the tokenizer or the model config."""
    folder = tiny_reward_model(tmp_path / "rm", demo_model, **tokenizer_settings)
    scorer = RewardModelScorer(RewardModelConfig(path=str(folder), dtype="float32", batch_size=3))
    prompts, completions = QUESTIONS * 2, ANSWERS + ANSWERS[::-1]  # 8 pairs, 3 batches
    batch = scorer.score(prompts, completions)
    alone = np.array([scorer.score([p], [c])[0] for p, c in zip(prompts, completions)])
    assert np.abs(batch - alone).max() < 1e-5, (batch, alone)
    assert np.ptp(batch) > 1e-2  # the pairs really score differently
    assert scorer.model.config.pad_token_id == scorer.tokenizer.pad_token_id is not None
    # the pair goes through the reward model's chat template, and that is what the model scores
    text = scorer.text(QUESTIONS[0], ANSWERS[0])
    assert text.count("<|im_start|>assistant\n5<|im_end|>") == 1 and "What is 2 + 3?" in text
    assert abs(_direct_logits(folder, text)[0].item() - alone[0]) < 1e-5
    assert scorer.pairs == 16 and scorer.seconds > 0


def test_without_chat_template_the_pair_is_prompt_blank_line_completion(demo_model, tmp_path):
    folder = tiny_reward_model(tmp_path / "rm", demo_model)
    (folder / "chat_template.jinja").unlink()
    scorer = RewardModelScorer(RewardModelConfig(path=str(folder), dtype="float32"))
    assert scorer.text("Q?", "A.") == "Q?\n\nA."
    scores = scorer.score(QUESTIONS, ANSWERS)
    assert np.abs(scores - [scorer.score([q], [a])[0] for q, a in zip(QUESTIONS, ANSWERS)]).max() < 1e-5


def test_long_pairs_lose_the_start_of_the_prompt(scorer, rm_dir):
    """max_length truncates on the left: the end of the pair, where the score is read, stays."""
    short = RewardModelScorer(RewardModelConfig(path=str(rm_dir), dtype="float32", max_length=16))
    long_prompt = "Tell me everything about " + "the history of numbers, " * 30 + "please."
    ids = short.tokenizer(short.text(long_prompt, "Sure."), truncation=True, max_length=16,
                          add_special_tokens=False)["input_ids"]
    assert len(ids) == 16 and short.tokenizer.decode(ids).endswith("Sure.<|im_end|>\n")
    cut = short.score([long_prompt], ["Sure."])[0]
    assert abs(cut - _direct_logits(rm_dir, short.tokenizer.decode(ids))[0].item()) < 1e-5
    assert abs(cut - scorer.score([long_prompt], ["Sure."])[0]) > 1e-6  # full length differs


def test_output_by_index_and_by_label_name_select_that_logit(demo_model, tmp_path):
    labels = ["helpfulness", "correctness", "verbosity"]
    folder = tiny_reward_model(tmp_path / "rm3", demo_model, labels=labels)
    scorer = RewardModelScorer(RewardModelConfig(path=str(folder), dtype="float32"))
    logits = torch.stack([_direct_logits(folder, scorer.text(q, a)) for q, a in zip(QUESTIONS, ANSWERS)])
    assert logits.shape == (4, 3) and (logits[:, 1] - logits[:, 2]).abs().min() > 1e-4
    for output, column in ((0, 0), (1, 1), ("verbosity", 2), ("correctness", 1), ("2", 2)):
        s = RewardModelScorer(RewardModelConfig(path=str(folder), dtype="float32", output=output))
        assert np.abs(s.score(QUESTIONS, ANSWERS) - logits[:, column].numpy()).max() < 1e-5, output
    for bad in (3, -1, "harmlessness"):
        with pytest.raises(RewardModelError) as err:
            RewardModelScorer(RewardModelConfig(path=str(folder), output=bad))
        assert f"output {bad!r}" in str(err.value) and str(folder) in str(err.value)
        assert "0 ('helpfulness'), 1 ('correctness'), 2 ('verbosity')" in str(err.value)
    # an index into a one-output model
    with pytest.raises(RewardModelError, match=r"it has 1: 0 \('LABEL_0'\)"):
        check_reward_model(str(tiny_reward_model(tmp_path / "rm1", demo_model)), 1)


def test_int8_is_refused_on_the_cpu(rm_dir):
    """torch's dynamic int8 runs on the CPU but changes the scores too much (docs/fitness.md):
    refused at config load for device cpu, and at start-up when the device resolves to the CPU."""
    with pytest.raises(ConfigError, match="int8 runs on CUDA only"):
        load_config(None, ["fitness.reward_model.dtype=int8", "fitness.reward_model.device=cpu"])
    with pytest.raises(RewardModelError, match="int8 runs on CUDA only"):
        RewardModelScorer(RewardModelConfig(path=str(rm_dir), dtype="int8", device="cpu"))
    out = run_cli(["essa-train", "--set", "fitness.kind=reward_model", "--set", "adapter.init=fresh",
                   "--set", f"fitness.reward_model.path={rm_dir}", "--set", "fitness.reward_model.dtype=int8",
                   "--set", "fitness.reward_model.device=cpu", "--dry-run"])
    assert out.returncode == 2 and "int8 runs on CUDA only" in out.stderr


# ---- start-up checks -------------------------------------------------------------------------

def test_kind_reward_model_needs_a_path_at_config_load():
    with pytest.raises(ConfigError, match="fitness.reward_model.path: must be set"):
        load_config(None, ["fitness.kind=reward_model"])
    with pytest.raises(ConfigError, match="fitness.reward_model.dtype: 'int4' is not allowed"):
        load_config(None, ["fitness.reward_model.dtype=int4"])
    with pytest.raises(ConfigError, match="Allowed keys in fitness.reward_model: baseline, batch_size"):
        load_config(None, ["fitness.reward_model.model=x"])


def test_missing_or_wrong_folders_are_errors_naming_the_path(demo_model, tmp_path):
    missing, empty = tmp_path / "no-such-rm", tmp_path / "empty"
    empty.mkdir()
    cases = [(missing, "folder not found"), (empty, "not a Hugging Face model folder (no config.json)"),
             (demo_model, "not a sequence-classification model: config.json names architectures "
                          "['LlamaForCausalLM']")]
    for folder, what in cases:
        with pytest.raises(RewardModelError) as err:
            check_reward_model(str(folder))
        assert f"fitness.reward_model.path {folder}: {what}" in str(err.value)
        with pytest.raises(RewardModelError, match=re.escape(what)):  # the scorer checks first
            RewardModelScorer(RewardModelConfig(path=str(folder)))
    # a worker checks before it loads its engine: this fails in a second, with no engine started
    from essa.runtime.evaluator import EngineEvaluator
    config = load_config(None, ["fitness.kind=reward_model", f"fitness.reward_model.path={missing}"])
    with pytest.raises(RewardModelError, match=re.escape(str(missing))):
        EngineEvaluator(config)
    # the dry-run plan: exit 2 with the message
    for folder, what in cases[::2]:
        out = run_cli(["essa-train", "--set", "fitness.kind=reward_model", "--set", "adapter.init=fresh",
                       "--set", f"fitness.reward_model.path={folder}", "--dry-run"])
        assert out.returncode == 2 and f"fitness.reward_model.path {folder}: {what}" in out.stderr


def test_dry_run_plan_names_the_reward_model_and_its_size(rm_dir, demo_model):
    params, nbytes = weight_stats(rm_dir)
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir)
    assert params == sum(p.numel() for p in model.parameters()) and nbytes == 4 * params  # float32
    out = run_cli(["essa-train", "--set", "fitness.kind=reward_model", "--set", "adapter.init=fresh",
                   "--set", f"fitness.reward_model.path={rm_dir}", "--set", "fitness.reward_model.baseline=true",
                   "--set", "fitness.reward_model.dtype=bfloat16", "--set", "fitness.reward_model.device=cpu",
                   "--dry-run"])
    assert out.returncode == 0, out.stderr
    assert (f"fitness     reward model {rm_dir}: LlamaForSequenceClassification, output 0 ('LABEL_0') "
            f"of 1") in out.stdout and "baseline on" in out.stdout
    found = re.search(r"rm memory   ([\d.]+) M parameters \(safetensors headers, ([\d.]+) MB as stored\); "
                      r"about ([\d.]+) MB of weights in bfloat16 on cpu", out.stdout)
    assert found, out.stdout
    assert [float(v) for v in found.groups()] == pytest.approx([params / 1e6, nbytes / 1e6, 2 * params / 1e6],
                                                               rel=5e-3)
    assert "(fitness reward_model, informative sampling" in out.stdout


# ---- fitness: the baseline -------------------------------------------------------------------

class FixedEngine:
    """A stand-in engine: each candidate (None: the base model) answers every prompt with its own
    fixed text; it records which candidates each generate() call ran."""

    name, candidates_per_pass = "fixed", 4

    def __init__(self, texts: dict):
        self.texts, self.calls = texts, []

    def generate(self, prompts, candidates, sampling):
        self.calls.append(list(candidates))
        return [[[Completion(f"{self.texts[c]} ({i})", 7)] for i in range(len(prompts))]
                for c in candidates]


def test_baseline_subtracts_the_base_reward_computed_once_per_item(scorer):
    examples = [Example(f"t-train-{i}", q, "") for i, q in enumerate(QUESTIONS)]
    prompts = [f"<chat>{q}</chat>" for q in QUESTIONS]  # the engine's prompts; the RM sees questions
    engine = FixedEngine({"a": "Five.", "b": "It is 5, because 2 + 3 = 5.", None: "I think 6."})
    greedy, cache = SamplingSettings(max_tokens=8), {}
    rm = {c: scorer.score(QUESTIONS, [f"{engine.texts[c]} ({i})" for i in range(4)]) for c in engine.texts}

    first = score_candidates(engine, ["a"], examples, prompts, None, "reward_model", greedy,
                             reward_model=scorer, baseline=cache)
    second = score_candidates(engine, ["a", "b"], examples, prompts, None, "reward_model", greedy,
                              reward_model=scorer, baseline=cache)
    assert engine.calls == [["a", None], ["a", "b"]]  # the base model generated once
    assert set(cache) == {e.id for e in examples}
    for score, c in ((first[0], "a"), (second[0], "a"), (second[1], "b")):
        assert np.abs(score.items - (rm[c] - rm[None])).max() < 1e-5
        assert np.abs(score.rewards - rm[c]).max() < 1e-5
        assert score.fitness == pytest.approx(score.items.mean())
    assert first[0].tokens == 2 * 4 * 7 and second[1].tokens == 4 * 7  # base tokens counted once

    # no baseline: the raw score; sampling: the base model is generated again on every call
    raw = score_candidates(engine, ["b"], examples, prompts, None, "reward_model", greedy,
                           reward_model=scorer)
    assert np.abs(raw[0].items - rm["b"]).max() < 1e-5 and engine.calls[-1] == ["b"]
    sampled = SamplingSettings(max_tokens=8, temperature=0.7)
    for _ in range(2):
        score_candidates(engine, ["b"], examples, prompts, None, "reward_model", sampled,
                         reward_model=scorer, baseline={})
    assert engine.calls[-2:] == [["b", None], ["b", None]]


def test_prompt_only_files_load_and_a_verifiable_reward_refuses_them(tmp_path, scorer):
    from essa.config.schema import TaskConfig
    from essa.data.loading import load_task
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": q, "response": "x"}) + "\n" for q in QUESTIONS * 5))
    task = load_task(TaskConfig(dataset=str(path), question_field="prompt", validation_size=4))
    train = task.split("train")
    assert len(train) == 16 and {e.answer for e in train} == {""} and train[0].question in QUESTIONS
    assert task.instruction == ""  # no '#### n' request: there is no number to give
    with pytest.raises(KeyError, match="no field 'answer'"):  # named explicitly: still required
        load_task(TaskConfig(dataset=str(path), question_field="prompt", answer_field="answer"))
    engine = FixedEngine({None: "Sure."})
    with pytest.raises(ValueError, match="fitness.kind accuracy needs gold answers"):
        score_candidates(engine, [None], train[:2], ["p", "q"], lambda *a, **k: [0.0, 0.0], "accuracy",
                         SamplingSettings())
    ok = score_candidates(engine, [None], train[:2], ["p", "q"], None, "reward_model",
                          SamplingSettings(), reward_model=scorer)
    assert np.isfinite(ok[0].items).all()


# ---- the paper's set-up ----------------------------------------------------------------------

def test_helpsteer2_config_dry_run(tmp_path, rm_dir):
    """The config's own paths do not exist here: exit 2 naming the model folder. With a policy
    config.json (Llama-3.1-8B sizes) and a reward model config.json (no weights) in their place,
    the plan gives d and the reward model's size from config.json."""
    config = ROOT / "launch/configs/llama3.1-8b-helpsteer2-rm.yaml"
    out = run_cli(["essa-train", "--config", str(config), "--dry-run"])
    assert out.returncode == 2 and "model folder not found: models/Llama-3.1-8B-Instruct" in out.stderr
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 32,
             "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
             "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072}
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy/config.json").write_text(json.dumps(llama))
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm/config.json").write_text(json.dumps(
        {**llama, "architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "LABEL_0"}}))
    out = run_cli(["essa-train", "--config", str(config), "--set", f"model.path={tmp_path / 'policy'}",
                   "--set", f"fitness.reward_model.path={tmp_path / 'rm'}", "--dry-run"])
    assert out.returncode == 0, out.stderr
    assert "search      d = 128 modules x 2 factors x" in out.stdout
    assert "reward model" in out.stdout and "output 0 ('LABEL_0') of 1" in out.stdout
    # Llama-3.1-8B with a one-logit head: 7.50 B parameters (the LM head of 0.53 B replaced)
    assert "7.5 G parameters (about, from config.json: no safetensors files)" in out.stdout
    assert "about 15 GB of weights in bfloat16" in out.stdout
    cfg = load_config(config)
    assert cfg.fitness.kind == "reward_model" and cfg.engine.max_model_len <= llama["max_position_embeddings"]
    assert cfg.fitness.reward_model.max_length >= cfg.engine.max_tokens
