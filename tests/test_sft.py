"""The SFT warm start: loss mask, the training loop, the PEFT folder, the cache, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from essa.config import ConfigError, load_config
from essa.sft import IGNORE_INDEX, end_of_turn_id, ensure_warm_start, read_summary, tokenize_example
from essa.sft import train_sft, warm_start_dir, warm_start_key
from essa.sft.data import batch_indices, collate, tokenize_examples
from essa.sft.train import load_lora_model, lr_factor, train_steps

TARGETS = ["q_proj", "v_proj"]


@pytest.fixture(scope="module")
def tokenizer(demo_model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(demo_model)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, demo_model, tokenizer):
    """A randomly initialised 2-layer Llama with the demo model's tokenizer and chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM
    folder = tmp_path_factory.mktemp("tiny-llama")
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_config(model, tmp_path, *overrides: str):
    """A small config on ``model``: tiny arithmetic splits, 3 SFT steps of 4, 2 threads."""
    base = [f"model.path={model}", f"output_dir={tmp_path / 'runs'}", "name=t",
            "task.arithmetic.train_size=40", "task.arithmetic.validation_size=6",
            "task.arithmetic.test_size=6", "sft.steps=3", "sft.batch_size=4", "sft.warmup_steps=1",
            "sft.threads=2", "sft.eval_examples=0", "adapter.rank=4",
            f"adapter.target_modules={','.join(TARGETS)}", "engine.max_tokens=8"]
    return load_config(None, base + list(overrides))


def test_loss_mask_covers_answer_and_stop_token_only(tokenizer):
    from essa.data import build_prompt
    prompt = build_prompt(tokenizer, "Mia has 3 apples. She gets 4 more. How many?", "End with #### n.")
    target = "3 + 4 = 7\n#### 7"
    stop = end_of_turn_id(tokenizer)
    assert stop == tokenizer.convert_tokens_to_ids("<|im_end|>")
    x = tokenize_example(tokenizer, prompt, target, stop, max_length=1000)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    assert x.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert x.labels[n_prompt:] == x.input_ids[n_prompt:]
    assert x.labels[-1] == stop
    assert tokenizer.decode(x.labels[n_prompt:]) == target + "<|im_end|>"
    assert tokenizer.decode(x.input_ids[:n_prompt]) == prompt
    cut = tokenize_example(tokenizer, prompt, target, stop, max_length=n_prompt + 2)
    assert len(cut.input_ids) == n_prompt + 2 and cut.num_target_tokens == 2


def test_end_of_turn_without_chat_template_is_eos(tokenizer):
    assert end_of_turn_id(tokenizer, chat_template=False) == tokenizer.eos_token_id


def test_batches_are_seeded_and_walk_whole_epochs():
    a = batch_indices(10, steps=5, batch_size=4, seed=3)
    assert a == batch_indices(10, steps=5, batch_size=4, seed=3)
    assert a != batch_indices(10, steps=5, batch_size=4, seed=4)
    flat = [i for b in a for i in b]
    assert sorted(flat[:10]) == list(range(10))  # first epoch: every example exactly once
    assert all(len(b) == 4 for b in a)


def test_collate_pads_right_with_ignored_labels(tokenizer):
    from essa.sft.data import TokenizedExample
    batch = collate([TokenizedExample([5, 6, 7], [-100, 6, 7]), TokenizedExample([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_warmup_is_linear_then_constant():
    assert [lr_factor(s, 3) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(0, 0) == 1.0


def test_tiny_sft_writes_a_peft_folder_peft_loads(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    config = make_config(tiny_model, tmp_path)
    out = tmp_path / "adapter"
    result = train_sft(config, out, progress=False)
    assert result.steps == 3 and len(result.losses) == 3 and result.target_tokens > 0
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 4 and set(adapter_cfg["target_modules"]) == set(TARGETS)
    tensors = load_file(out / "adapter_model.safetensors")
    kinds = {k.split(".")[-3] for k in tensors}
    assert kinds == set(TARGETS)
    assert len(tensors) == 2 * 2 * len(TARGETS)  # 2 layers x modules x (A, B)
    b = [t for k, t in tensors.items() if "lora_B" in k]
    assert all(t.shape[1] == 4 and t.abs().max() > 0 for t in b)  # trained away from B = 0
    assert read_summary(out)["steps"] == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    from essa.adapters.peft_io import read_adapter  # what the search and the engines read
    assert read_adapter(out).rank == 4
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out)
    assert sum("lora_A" in n for n, _ in model.named_parameters()) == 2 * len(TARGETS)


def test_loss_decreases_on_a_fixed_batch(demo_model, tokenizer, tmp_path):
    from essa.data import load_task
    torch.set_num_threads(2)
    config = make_config(demo_model, tmp_path, "sft.steps=4", "sft.batch_size=1",
                         "sft.learning_rate=0.002", "sft.warmup_steps=0")
    task = load_task(config.task)
    data = tokenize_examples(tokenizer, task.split("train")[:1], task.instruction, True, 384)
    model = load_lora_model(demo_model, config.adapter, seed=0)
    losses, _ = train_steps(model, data, config.sft, 0, tokenizer.pad_token_id, progress=False)
    assert losses[-1] < 0.8 * losses[0], losses


def test_cache_trains_once_and_keys_on_training_settings(tiny_model, tmp_path, monkeypatch):
    import essa.sft.train
    config = make_config(tiny_model, tmp_path, "sft.steps=2")
    folder = ensure_warm_start(config, progress=False)
    assert folder == warm_start_dir(config) and folder.parent.name == "warm-start"
    assert read_summary(folder)["cache_key"] == folder.name
    stamp = (folder / "adapter_model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the cached warm start was trained again")
    monkeypatch.setattr(essa.sft.train, "train_sft", no_training)
    assert ensure_warm_start(config, progress=False) == folder
    assert (folder / "adapter_model.safetensors").stat().st_mtime_ns == stamp

    assert warm_start_key(make_config(tiny_model, tmp_path, "sft.steps=3")) != folder.name
    assert warm_start_key(make_config(tiny_model, tmp_path, "sft.steps=2", "sft.learning_rate=0.0005")) != folder.name
    assert warm_start_key(make_config(tiny_model, tmp_path, "sft.steps=2", "seed=1")) != folder.name
    # Reporting and speed settings do not change the weights, so they share the folder.
    assert warm_start_key(make_config(tiny_model, tmp_path, "sft.steps=2", "sft.threads=1",
                                      "sft.eval_examples=50", "adapter.alpha_frac=0.5")) == folder.name
    with pytest.raises(ValueError, match="adapter.init"):
        ensure_warm_start(make_config(tiny_model, tmp_path, "adapter.init=fresh"))


def test_ifeval_task_trains_its_warm_start_on_sft_dataset(tiny_model, tmp_path):
    config = make_config(tiny_model, tmp_path, "task.dataset=ifeval", "sft.steps=1")
    with pytest.raises(ValueError, match="no reference responses.*sft.dataset"):
        train_sft(config, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()
    config = make_config(tiny_model, tmp_path, "task.dataset=ifeval", "sft.steps=1", "sft.dataset=gsm8k",
                         "sft.max_examples=4", "sft.max_length=96")
    result = train_sft(config, tmp_path / "adapter", progress=False)
    assert result.examples == 4 and result.target_tokens > 0
    # the key holds the SFT dataset: the same task with another sft.dataset trains another adapter
    assert warm_start_key(config) != warm_start_key(make_config(
        tiny_model, tmp_path, "task.dataset=ifeval", "sft.steps=1", "sft.dataset=arithmetic",
        "sft.max_examples=4", "sft.max_length=96"))


def test_unknown_target_module_is_a_clear_config_error(tiny_model, tmp_path, capsys):
    config = make_config(tiny_model, tmp_path, "adapter.target_modules=q_proj,qkv_proj")
    with pytest.raises(ConfigError, match=r"\['qkv_proj'\] not found.*'q_proj'"):
        train_sft(config, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()
    from essa.cli.sft import main
    assert main(["--set", f"model.path={tiny_model}", "--set", "adapter.target_modules=attn_x",
                 "-q", "--no-eval", "--output", str(tmp_path / "x")]) == 2
    assert "attn_x" in capsys.readouterr().out


def test_cli_trains_evaluates_and_prints_a_summary(tiny_model, tmp_path, capsys):
    from essa.cli.sft import main
    args = [f"--set={s}" for s in ("sft.steps=2", "sft.eval_examples=4")]
    overrides = [f"model.path={tiny_model}", f"output_dir={tmp_path / 'runs'}",
                 "task.arithmetic.train_size=40", "task.arithmetic.validation_size=6",
                 "task.arithmetic.test_size=6", "sft.batch_size=2", "sft.threads=2",
                 "engine.max_tokens=4", f"adapter.target_modules={','.join(TARGETS)}"]
    args += [f"--set={s}" for s in overrides]
    assert main(args + ["-q", "--eval-backend", "transformers"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "runs" / "sft-essa"  # the default run name is 'essa'
    assert f"adapter: {folder}" in out and "2 steps" in out and "base " in out and "-> sft " in out
    ev = read_summary(folder)["eval"]
    assert ev["items"] == 4 and ev["backend"] == "transformers"
    assert 0.0 <= ev["base_accuracy"] <= 1.0 and 0.0 <= ev["sft_accuracy"] <= 1.0


def test_cli_help_names_the_options(capsys):
    from essa.cli.sft import main
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--output", "--cache", "--no-eval", "--eval-backend", "--set"):
        assert option in text


# ---- the trl trainer (the GPU path) and its memory plan ------------------------------------------

def fake_cuda(bf16: bool = True):
    from essa.models.dtype import Device
    return Device("cuda", "Fake H100", cuda_bf16=bf16)


def fake_cpu(capability: str = "AVX2"):
    from essa.models.dtype import Device
    return Device("cpu", "fake", aten_capability=capability)


def test_setup_keeps_the_cpu_on_the_loop_and_sends_cuda_to_trl():
    from essa.config.schema import SFTConfig
    from essa.sft.setup import resolve_setup
    cpu = resolve_setup(SFTConfig(), fake_cpu())
    assert (cpu.trainer, cpu.device, cpu.precision, cpu.gradient_checkpointing) == ("loop", "cpu", "float32", False)
    gpu = resolve_setup(SFTConfig(), fake_cuda())
    assert (gpu.trainer, gpu.device, gpu.precision, gpu.gradient_checkpointing) == ("trl", "cuda", "bf16", True)
    assert "bf16" in gpu.describe() and "gradient checkpointing" in gpu.describe()
    assert resolve_setup(SFTConfig(), fake_cuda(bf16=False)).precision == "float32"  # e.g. a V100
    qlora = resolve_setup(SFTConfig(quantization="nf4"), fake_cpu())  # QLoRA is the trl trainer's
    assert (qlora.trainer, qlora.quantization) == ("trl", "nf4") and "QLoRA" in qlora.describe()
    assert resolve_setup(SFTConfig(trainer="trl", gradient_checkpointing="on"), fake_cpu()).gradient_checkpointing
    with pytest.raises(ConfigError, match="sft.device.*no CUDA"):
        resolve_setup(SFTConfig(device="cuda"), fake_cpu())
    with pytest.raises(ConfigError, match="loop trains on the CPU"):
        resolve_setup(SFTConfig(device="cuda", trainer="loop"), fake_cuda())
    with pytest.raises(ConfigError, match="nf4"):
        load_config(None, ["sft.trainer=loop", "sft.quantization=nf4"])


def test_micro_batches_divide_the_batch_under_the_token_budget():
    from essa.sft.memory import micro_batch_rows
    assert micro_batch_rows(8, 384, 0) == 8  # no budget: the whole batch
    assert micro_batch_rows(8, 384, 1600) == 4  # 4 x 384 = 1536 <= 1600; 8 would not fit
    assert micro_batch_rows(6, 100, 450) == 3  # the largest divisor of 6 that fits, not 4
    assert micro_batch_rows(7, 100, 650) == 1  # 7 is prime: one row at a time
    with pytest.raises(ConfigError, match="sft.max_batch_tokens=100.*384"):
        micro_batch_rows(8, 384, 100)


QWEN_32B = {"hidden_size": 5120, "intermediate_size": 27648, "num_hidden_layers": 64,
            "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064,
            "tie_word_embeddings": False, "model_type": "qwen2"}


def test_memory_estimate_counts_a_32b_model_as_its_size_says():
    from essa.sft.memory import GIB, ModelShape, TrainingShape, estimate_memory
    shape = ModelShape(hidden=5120, intermediate=27648, layers=64, heads=40, kv_heads=8,
                       head_dim=128, vocab=152064, tied_embeddings=False)
    params = shape.decoder_linear_params() + shape.embedding_params()
    assert 32.0e9 < params < 33.5e9  # Qwen2.5-32B: 32.8B parameters (norms and biases aside)
    train = TrainingShape(precision="bf16", quantization="none", gradient_checkpointing=False,
                          micro_batch_rows=8, sequence_tokens=512, lora_rank=16,
                          lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    bf16 = estimate_memory(shape, train)
    assert bf16.weights == pytest.approx(2 * params, rel=1e-6)
    # rank 16 on q/k/v/o: 16 x ((5120+5120) + 2 x (5120+1024) + (5120+5120)) x 64 layers, 16 bytes each
    assert bf16.lora == 16 * (10240 + 2 * 6144 + 10240) * 64 * 16
    import dataclasses
    nf4 = estimate_memory(shape, dataclasses.replace(train, quantization="nf4"))
    assert nf4.weights < 0.3 * bf16.weights and nf4.activations == bf16.activations
    ckpt = estimate_memory(shape, dataclasses.replace(train, gradient_checkpointing=True))
    assert ckpt.activations < 0.2 * bf16.activations
    assert 64 * GIB < bf16.total and nf4.total < bf16.total


@pytest.fixture
def qwen32b_folder(tmp_path):
    folder = tmp_path / "Qwen2.5-32B-shape"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN_32B))
    return folder


def test_dry_run_refuses_a_plan_that_cannot_fit_and_names_what_would(qwen32b_folder, tmp_path, capsys):
    from essa.cli.sft import main
    base = ["--set", f"model.path={qwen32b_folder}", "--set", f"output_dir={tmp_path}",
            "--set", "sft.trainer=trl", "--set", "sft.precision=bf16", "--set", "sft.max_length=512",
            "--set", "sft.device_memory_gib=80", "--dry-run"]
    assert main(base + ["--set", "sft.gradient_checkpointing=false"]) == 2
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "would fit: sft.gradient_checkpointing=true (" in out
    assert "warm-start cache" in out and "SFT trainer trl" in out
    assert main(base + ["--set", "sft.quantization=nf4", "--set", "sft.gradient_checkpointing=true"]) == 0
    out = capsys.readouterr().out
    assert "fits" in out and "DOES NOT FIT" not in out and "QLoRA nf4" in out
    assert not any(tmp_path.glob("warm-start/*"))  # a dry run trains nothing


def test_dry_run_on_the_cpu_says_the_memory_cannot_be_checked(tiny_model, tmp_path, capsys):
    from essa.cli.sft import main
    assert main(["--set", f"model.path={tiny_model}", "--set", f"output_dir={tmp_path}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "SFT trainer loop on cpu" in out and "device memory: unknown" in out


def test_trl_trainer_takes_the_loops_steps_and_micro_batches_keep_the_loss(tiny_model, tmp_path):
    """Same init, same batches, same optimizer: the trl trainer's losses follow the loop's, and
    splitting each batch into micro-batches under a token budget changes nothing but rounding."""
    common = ("sft.steps=4", "sft.batch_size=4", "sft.learning_rate=0.01", "sft.precision=float32")
    loop = train_sft(make_config(tiny_model, tmp_path, *common, "sft.trainer=loop"), tmp_path / "loop",
                     progress=False)
    trl = train_sft(make_config(tiny_model, tmp_path, *common, "sft.trainer=trl"), tmp_path / "trl",
                    progress=False)
    split = train_sft(make_config(tiny_model, tmp_path, *common, "sft.trainer=trl",
                                  "sft.max_batch_tokens=160"), tmp_path / "split", progress=False)
    assert (loop.trainer, trl.trainer) == ("loop", "trl") and split.micro_batch_rows < 4
    assert trl.micro_batch_rows == 4 and trl.train_tokens == loop.train_tokens > 0
    assert trl.target_tokens == loop.target_tokens
    assert trl.losses == pytest.approx(loop.losses, rel=2e-3)
    assert split.losses == pytest.approx(trl.losses, rel=2e-3)
    a, b = load_file(tmp_path / "loop" / "adapter_model.safetensors"), load_file(tmp_path / "trl" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:  # other batches or another init would differ by ~100%
        assert (a[key] - b[key]).norm() < 1e-3 * a[key].norm(), key
    summary = read_summary(tmp_path / "trl")
    assert summary["trainer"] == "trl" and "float32" in summary["setup"]


def test_qlora_trains_on_a_4bit_base(tiny_model, tmp_path):
    pytest.importorskip("bitsandbytes")
    result = train_sft(make_config(tiny_model, tmp_path, "sft.steps=3", "sft.quantization=nf4"),
                       tmp_path / "qlora", progress=False)
    assert result.trainer == "trl" and "QLoRA nf4" in result.setup
    tensors = load_file(tmp_path / "qlora" / "adapter_model.safetensors")
    assert any("lora_B" in k and t.abs().max() > 0 for k, t in tensors.items())
    # a QLoRA warm start learns around the 4-bit base: it gets its own cache folder
    assert warm_start_key(make_config(tiny_model, tmp_path, "sft.steps=3", "sft.quantization=nf4")) != \
        warm_start_key(make_config(tiny_model, tmp_path, "sft.steps=3"))
    # how it is computed is not in the key: a warm start trained on a GPU serves a CPU run
    assert warm_start_key(make_config(tiny_model, tmp_path, "sft.steps=3", "sft.trainer=trl",
                                      "sft.max_batch_tokens=4096", "sft.precision=bf16")) == \
        warm_start_key(make_config(tiny_model, tmp_path, "sft.steps=3"))
