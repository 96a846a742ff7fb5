"""``essa quantize``: real llmcompressor runs on the demo model in the quantize venv (no mocks).

One round-to-nearest int8 copy is made per session (about 15 s) and checked from its files; the
refusals are checked on the real model before anything slow starts; one calibrated int4 run goes
through the CLI on a small sample.
"""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import safe_open

from essa.cli.main import main as essa_main
from essa.config import load_config
from essa.data import load_task
from essa.quantize.calibration import calibration_set, calibration_text, sample_rows
from essa.quantize.paths import (MANIFEST, checkpoint_quantization, is_current_copy, quantized_dir,
                                 read_manifest, source_fingerprint)
from essa.quantize.run import LOG, ensure_quantized, quantize_model
from essa.quantize.schemes import PER_CHANNEL, choose_group_size, linear_in_features, scheme_group_size

from conftest import ROOT

pytestmark = pytest.mark.model
DEMO_CONFIG = ROOT / "launch" / "configs" / "demo-cpu.yaml"


@pytest.fixture(scope="session")
def int8_copy(demo_model, tmp_path_factory):
    """The real round-to-nearest int8 copy of the demo model, in a folder of its own."""
    return quantize_model(demo_model, "int8", output=tmp_path_factory.mktemp("quantized") / "int8")


def header(folder, name: str):
    """(shape, dtype) of one tensor of a single-file checkpoint, from the safetensors header."""
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as f:
        tensor = f.get_slice(name)
        return tensor.get_shape(), tensor.get_dtype()


def test_int8_copy_declares_w8a8_compressed_tensors(int8_copy):
    quant = json.loads((int8_copy / "config.json").read_text())["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors"
    (group,) = quant["config_groups"].values()
    weights, acts = group["weights"], group["input_activations"]
    assert (weights["num_bits"], weights["type"], weights["strategy"]) == (8, "int", "channel")
    assert (acts["num_bits"], acts["type"], acts["strategy"], acts["dynamic"]) == (8, "int", "token", True)
    assert "lm_head" in quant["ignore"]
    assert checkpoint_quantization(int8_copy) == "compressed-tensors"


def test_int8_copy_stores_int8_weights_and_keeps_the_rest(int8_copy, demo_model):
    name = "model.layers.0.self_attn.q_proj.weight"
    source_shape, _ = header(demo_model, name)
    assert header(int8_copy, name) == (source_shape, "I8")
    assert header(int8_copy, "model.layers.0.self_attn.q_proj.weight_scale")[0] == [source_shape[0], 1]
    # the embeddings keep the checkpoint's dtype (bf16), not the float32 of a default load
    assert header(int8_copy, "model.embed_tokens.weight")[1] == "BF16"
    # bf16 -> int8 saves a byte per Linear weight; scales cost a little of it back
    linear_elements = sum(header(demo_model, n)[0][0] * size
                          for n, size in linear_in_features(demo_model).items())
    saved = (demo_model / "model.safetensors").stat().st_size - (int8_copy / "model.safetensors").stat().st_size
    assert saved > 0.95 * linear_elements


def test_int8_manifest_records_how_it_was_made(int8_copy, demo_model):
    manifest = read_manifest(int8_copy)
    assert manifest["scheme"] == "int8" and manifest["llmcompressor_scheme"] == "W8A8"
    assert manifest["group_size"] is None
    assert manifest["calibration"] == "round-to-nearest"
    assert manifest["source"] == str(demo_model.absolute())
    assert manifest["source_fingerprint"] == source_fingerprint(demo_model)
    assert set(manifest["versions"]) == {"torch", "transformers", "llmcompressor", "compressed-tensors"}
    assert manifest["versions"]["llmcompressor"].startswith("0.14")
    assert manifest["seconds"] > 0 and manifest["date"][:2] == "20"
    assert (int8_copy / LOG).is_file() and (int8_copy / "tokenizer.json").is_file()


def test_output_is_published_atomically_and_not_overwritten(int8_copy, demo_model):
    assert sorted(p.name for p in int8_copy.parent.iterdir()) == ["int8"]  # no temp folder left
    with pytest.raises(FileExistsError, match="--force"):
        quantize_model(demo_model, "int8", output=int8_copy)


def test_current_copy_is_recognised_and_kept(int8_copy, demo_model, tmp_path, monkeypatch):
    assert is_current_copy(int8_copy, demo_model, "int8")
    assert not is_current_copy(int8_copy, demo_model, "int4")
    monkeypatch.setenv("ESSA_CACHE", str(tmp_path / "cache"))
    default = quantized_dir(demo_model, "int8")
    shutil.copytree(int8_copy, default)
    # no quantize venv: any new run would fail, so returning the folder means it was kept
    monkeypatch.setenv("ESSA_QUANTIZE_PYTHON", str(tmp_path / "missing" / "python"))
    assert ensure_quantized(demo_model, "int8") == default
    manifest = read_manifest(default)
    (default / MANIFEST).write_text(json.dumps({**manifest, "source_fingerprint": "stale"}))
    assert not is_current_copy(default, demo_model, "int8")
    with pytest.raises(FileNotFoundError, match="quantize venv"):
        ensure_quantized(demo_model, "int8")


def test_already_quantized_input_is_refused(int8_copy, tmp_path):
    with pytest.raises(ValueError, match=r"already quantized \(compressed-tensors\)"):
        quantize_model(int8_copy, "int4", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_scheme_is_refused(demo_model, tmp_path, capsys):
    with pytest.raises(ValueError, match="int8, int4"):
        quantize_model(demo_model, "fp8", output=tmp_path / "out")
    assert essa_main(["quantize", str(demo_model), "--scheme", "fp8", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("essa quantize: unknown quantization scheme 'fp8'") and "\n" not in err


def test_missing_quantize_venv_is_refused_with_the_fix(demo_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ESSA_QUANTIZE_PYTHON", str(tmp_path / "missing" / "python"))
    with pytest.raises(FileNotFoundError, match="make setup.*requirements-quantize.txt.*ESSA_QUANTIZE_PYTHON"):
        quantize_model(demo_model, "int8", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert essa_main(["quantize", str(demo_model), "--scheme", "int8", "--output", str(tmp_path / "o")]) == 2
    assert "essa quantize: no quantize venv" in capsys.readouterr().err


def test_int4_group_size_from_the_real_headers(demo_model):
    sizes = linear_in_features(demo_model)
    assert len(sizes) == 30 * 7 and set(sizes.values()) == {576, 1536}  # no embeddings, no norms
    assert scheme_group_size(demo_model, "int4") == 64  # 576 is not a multiple of 128
    assert scheme_group_size(demo_model, "int4", 32) == 32
    with pytest.raises(ValueError, match=r"128 does not divide .*model\.layers\.0\.mlp\.gate_proj\.weight \(576\)"):
        scheme_group_size(demo_model, "int4", 128)
    with pytest.raises(ValueError, match="int4 only"):
        scheme_group_size(demo_model, "int8", 64)


def test_group_size_rule():
    assert choose_group_size({"a": 4096, "b": 11008}) == 128
    assert choose_group_size({"a": 96}) == 32
    assert choose_group_size({"a": 100}) == PER_CHANNEL
    with pytest.raises(ValueError, match="positive"):
        choose_group_size({"a": 128}, 0)


def test_calibration_sample_is_seeded_and_from_the_train_split(demo_model):
    config = load_config(DEMO_CONFIG)
    task = load_task(config.task)
    train = task.split("train")
    assert sample_rows(train, 16, 0) == sample_rows(train, 16, 0)
    assert sample_rows(train, 16, 0) != sample_rows(train, 16, 1)
    assert len(sample_rows(train[:5], 16, 0)) == 5  # fewer rows than asked: all of them
    texts, record = calibration_set(config, demo_model, 16, 0)
    assert record == {"dataset": "arithmetic", "split": "train", "samples": 16, "seed": 0}
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    assert texts == [calibration_text(tokenizer, e, task.instruction, True) for e in sample_rows(train, 16, 0)]
    chosen = sample_rows(train, 16, 0)
    held_out = {e.question for split in ("validation", "test") for e in task.split(split)}
    assert held_out and not held_out & {e.question for e in chosen}  # the generator keeps splits apart
    assert all(t.count("<|im_start|>assistant") == 1 and e.solution.strip() in t for t, e in zip(texts, chosen))


def test_calibrated_int4_through_the_cli(demo_model, tmp_path, capsys):
    out = tmp_path / "int4-gptq"
    code = essa_main(["quantize", str(demo_model), "--scheme", "int4", "--calibrate",
                      "--config", str(DEMO_CONFIG), "--samples", "16", "--max-seq-len", "128",
                      "--seed", "3", "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    manifest = read_manifest(out)
    assert manifest["group_size"] == 64 and manifest["llmcompressor_scheme"] == "W4A16"
    assert manifest["calibration"] == {"method": "gptq", "dataset": "arithmetic", "split": "train",
                                       "samples": 16, "seed": 3, "max_seq_len": 128,
                                       "config": str(DEMO_CONFIG)}
    quant = json.loads((out / "config.json").read_text())["quantization_config"]
    (group,) = quant["config_groups"].values()
    assert (group["weights"]["num_bits"], group["weights"]["group_size"]) == (4, 64)
    assert group["input_activations"] is None
    assert header(out, "model.layers.0.self_attn.q_proj.weight_packed")[1] == "I32"  # 8 int4 per int32


def test_a_failing_child_leaves_no_output_and_keeps_its_log(demo_model, tmp_path, monkeypatch):
    """The main venv's python has no llmcompressor: the child fails for real, at its first import."""
    import sys
    from essa.quantize.run import QuantizeError
    monkeypatch.setenv("ESSA_QUANTIZE_PYTHON", sys.executable)
    out = tmp_path / "int8"
    with pytest.raises(QuantizeError, match="(?s)exit 1.*No module named 'llmcompressor'"):
        quantize_model(demo_model, "int8", output=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.failed.log"]
