"""The prepared demo model: a plain HF folder that transformers and vLLM both load."""

import json

from essa.engines.base import SamplingSettings
from essa.models.prepare import greedy_check, is_prepared
from essa.models.resolve import resolve_model_path

import pytest


def test_prepared_folder_is_plain_bf16_checkpoint(demo_model):
    assert is_prepared(demo_model)
    config = json.loads((demo_model / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert (demo_model / "tokenizer.json").is_file()
    from transformers import AutoTokenizer
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(demo_model).chat_template


def test_transformers_greedy_generation_is_non_empty_and_repeatable(demo_model):
    first = greedy_check(demo_model, "What is 7 + 5?", max_new_tokens=10)
    assert first.strip()
    assert greedy_check(demo_model, "What is 7 + 5?", max_new_tokens=10) == first


def test_vllm_greedy_generation_is_non_empty_and_repeatable(vllm_engine):
    prompts = ["<|im_start|>user\nWhat is 7 + 5?<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"]
    sampling = SamplingSettings(max_tokens=12)
    a = vllm_engine.generate(prompts, [None], sampling)[0]
    b = vllm_engine.generate(prompts, [None], sampling)[0]
    assert all(c[0].text.strip() and c[0].num_tokens > 0 for c in a)
    assert [c[0].text for c in a] == [c[0].text for c in b]


def test_missing_model_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found: .*nowhere"):
        resolve_model_path(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"))
