"""Real PEFT adapters on a tiny random Llama: round trip, loading candidates, export, fresh init."""

import copy

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from essa.adapters import (SvdSpace, check_compatible, export_adapter, export_merged, read_adapter,
                           write_fresh_adapter)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
CONFIG = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
INPUT_IDS = torch.arange(3, 19).reshape(2, 8)  # (batch, seq)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved base model and a saved PEFT adapter with non-zero lora_B."""
    root = tmp_path_factory.mktemp("peft")
    torch.manual_seed(0)
    base = LlamaForCausalLM(CONFIG).eval()
    base.save_pretrained(root / "base")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS)
    peft_model = get_peft_model(copy.deepcopy(base), lora)
    with torch.no_grad():  # PEFT initialises lora_B to zero: perturb it to get a real adapter
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    peft_model.save_pretrained(root / "adapter")
    return root, base


def logits(model):
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def load_peft(base, folder):
    return PeftModel.from_pretrained(copy.deepcopy(base), str(folder)).eval()


def with_deltas(base, candidate):
    """The base model with each scale * B @ A added to its module's weight by hand (merged mode)."""
    model = copy.deepcopy(base)
    with torch.no_grad():
        for module, (a, b) in candidate.factors.items():
            model.get_submodule(module.name).weight += candidate.scale * b @ a
    return model


@pytest.mark.parametrize("alpha_frac", [1.0, 0.5])
def test_round_trip_matches_source_delta(setup, alpha_frac):
    root, _ = setup
    space = SvdSpace.from_folder(root / "adapter", alpha_frac)
    check_compatible(space.adapter, root / "base")
    out = space.candidate(space.start_vector()).factors
    for m, (a, b) in space.adapter.candidate.factors.items():
        src = b @ a  # (out, in)
        new = out[m][1] @ out[m][0]
        assert (torch.linalg.matrix_norm(new - src) / torch.linalg.matrix_norm(src)).item() < 1e-5


def test_candidate_loads_in_peft_with_the_delta_logits(setup, tmp_path):
    root, base = setup
    space = SvdSpace.from_folder(root / "adapter", alpha_frac=0.5)
    rng = np.random.default_rng(1)
    x = space.start_vector() * (1 + 0.5 * rng.standard_normal(space.dim))
    space.write_candidate(x, tmp_path / "cand")
    by_peft = logits(load_peft(base, tmp_path / "cand"))
    by_hand = logits(with_deltas(base, space.candidate(x)))
    source = logits(load_peft(base, root / "adapter"))
    torch.testing.assert_close(by_peft, by_hand, rtol=1e-4, atol=1e-5)
    assert (by_peft - source).abs().max() > 1e-3  # the candidate really is another adapter


def test_export_adapter_and_merged_model(setup, tmp_path):
    root, base = setup
    space = SvdSpace.from_folder(root / "adapter")
    x = space.start_vector() * 1.3
    folder = export_adapter(space, x, tmp_path / "best", base_model_name_or_path=str(root / "base"))
    assert read_adapter(folder).config["base_model_name_or_path"] == str(root / "base")
    expected = logits(with_deltas(base, space.candidate(x)))
    torch.testing.assert_close(logits(load_peft(base, folder)), expected, rtol=1e-4, atol=1e-5)
    merged_dir = export_merged(space, x, root / "base", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(logits(merged), expected, rtol=1e-4, atol=1e-5)


def test_fresh_adapter_is_small_non_degenerate_and_loadable(setup, tmp_path):
    root, base = setup
    folder = write_fresh_adapter(root / "base", tmp_path / "fresh", rank=4, alpha=8, rel_norm=0.02)
    again = write_fresh_adapter(root / "base", tmp_path / "fresh2", rank=4, alpha=8, rel_norm=0.02)
    adapter = read_adapter(folder)
    assert adapter.sha256 == read_adapter(again).sha256  # same seed, same adapter
    check_compatible(adapter, root / "base")
    assert len(adapter.modules) == 2 * len(TARGETS)
    weights = base.state_dict()
    for m, (a, b) in adapter.candidate.factors.items():
        delta = adapter.scale * b @ a
        weight = weights[f"{m.name}.weight"]  # (out, in)
        ratio = torch.linalg.matrix_norm(delta) / torch.linalg.matrix_norm(weight)
        assert ratio.item() == pytest.approx(0.02, rel=1e-4)
        for factor in (a, b):
            s = torch.linalg.svdvals(factor.double())
            assert s.min() > 1e-3 * s.max()  # no zero singular value (PEFT's default B = 0 has all)
            assert (s[:-1] - s[1:]).min() > 1e-6 * s.max()  # distinct: U and V are well defined
    space = SvdSpace.from_folder(folder)
    assert np.all(space.start_vector() > 0)
    fresh_logits = logits(load_peft(base, folder))
    base_logits = logits(base)
    assert 0 < (fresh_logits - base_logits).abs().max() < 0.1 * base_logits.abs().max()
