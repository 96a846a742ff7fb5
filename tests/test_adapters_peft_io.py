"""Validation of adapter folders and of their compatibility with a base model config."""

import json
import re

import pytest
import torch
from transformers import LlamaConfig

from essa.adapters import AdapterError, check_compatible, read_adapter, write_adapter
from essa.adapters.init import lora_config

MODEL = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
         "num_hidden_layers": 2, "intermediate_size": 128}
SHAPES = {"q_proj": (64, 64), "k_proj": (32, 64), "v_proj": (32, 64), "o_proj": (64, 64)}


def write(folder, rank=4, shapes=SHAPES, layers=2, config=None, extra=None):
    """A PEFT folder for the tiny Llama above, optionally with wrong shapes or config."""
    tensors = {}
    for layer in range(layers):
        for kind, (out, inp) in shapes.items():
            name = f"base_model.model.model.layers.{layer}.self_attn.{kind}"
            tensors[f"{name}.lora_A.weight"] = torch.randn(rank, inp)
            tensors[f"{name}.lora_B.weight"] = torch.randn(out, rank)
    tensors.update(extra or {})
    write_adapter(folder, tensors, config or lora_config(rank, 8, list(shapes)))
    return folder


def test_valid_adapter_reads_in_layer_order(tmp_path):
    adapter = read_adapter(write(tmp_path))
    assert adapter.rank == 4 and len(adapter.modules) == 8
    assert [m.layer for m in adapter.modules] == [0] * 4 + [1] * 4
    q = next(m for m in adapter.modules if m.kind == "k_proj")
    assert (q.out_features, q.in_features) == (32, 64)
    assert len(adapter.sha256) == 64
    check_compatible(adapter, MODEL)
    check_compatible(adapter, LlamaConfig(vocab_size=128, **MODEL))


def test_model_folder_config_is_accepted(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(MODEL))
    check_compatible(write(tmp_path / "ad"), tmp_path / "model")


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_missing_file_is_named(tmp_path, missing):
    folder = write(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(AdapterError, match=f"{re.escape(str(tmp_path))}.*missing {missing}"):
        read_adapter(folder)


def test_not_a_folder(tmp_path):
    with pytest.raises(AdapterError, match="not a folder"):
        read_adapter(tmp_path / "nowhere")


@pytest.mark.parametrize("change, message", [
    ({"peft_type": "IA3"}, "peft_type is 'IA3'"),
    ({"use_dora": True}, "unsupported LoRA options set: use_dora"),
    ({"rank_pattern": {"q_proj": 2}}, "rank_pattern"),
    ({"bias": "all"}, "bias"),
])
def test_config_variants_are_rejected(tmp_path, change, message):
    config = {**lora_config(4, 8, list(SHAPES)), **change}
    with pytest.raises(AdapterError, match=message):
        read_adapter(write(tmp_path, config=config))


def test_rank_mismatch_with_config(tmp_path):
    config = lora_config(8, 8, list(SHAPES))  # says r = 8, tensors are rank 4
    with pytest.raises(AdapterError, match=r"do not match rank r=8"):
        read_adapter(write(tmp_path, config=config))


def test_module_outside_target_modules(tmp_path):
    config = lora_config(4, 8, ["q_proj", "k_proj", "v_proj"])  # o_proj missing from the config
    with pytest.raises(AdapterError, match=r"o_proj is not among target_modules"):
        read_adapter(write(tmp_path, config=config))


def test_unexpected_tensor(tmp_path):
    extra = {"base_model.model.model.embed_tokens.lora_embedding_A": torch.zeros(4, 128)}
    with pytest.raises(AdapterError, match="unexpected tensor.*lora_embedding_A"):
        read_adapter(write(tmp_path, extra=extra))


def test_shape_mismatch_with_model(tmp_path):
    adapter = read_adapter(write(tmp_path))
    wider = {**MODEL, "hidden_size": 96, "head_dim": 16}
    message = rf"{re.escape(str(tmp_path))}.*k_proj: adapter is 32x64.*model's k_proj is 32x96"
    with pytest.raises(AdapterError, match=message):
        check_compatible(adapter, wider)


def test_unknown_target_module_for_model(tmp_path):
    shapes = {**SHAPES, "qkv_fused": (128, 64)}
    adapter = read_adapter(write(tmp_path, shapes=shapes))
    message = rf"{re.escape(str(tmp_path))}.*unknown target module .*qkv_fused"
    with pytest.raises(AdapterError, match=message):
        check_compatible(adapter, MODEL)


def test_more_layers_than_the_model(tmp_path):
    adapter = read_adapter(write(tmp_path, layers=3))
    with pytest.raises(AdapterError, match="layers.2.*not in the model's 2 layers"):
        check_compatible(adapter, MODEL)
