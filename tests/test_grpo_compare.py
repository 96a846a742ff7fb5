"""The GRPO baseline (essa-grpo) end to end on the demo model, its clock and reward pieces, and
``essa compare`` on fabricated run directories."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import run_cli
from essa.config import load_config
from essa.reporting.compare import CompareError, compare, load_curve, write_comparison
from essa.rundir import MetricsWriter, read_metrics

# ---- essa-grpo end to end -------------------------------------------------------------------------

# A user reward (resolved by essa.rewards.get_reward like every reward) that logs what it is asked to
# score, so the test sees which prompts' gold answers and how many completions reach it. Its score
# varies with the completion's length: sampled completions of a group differ, so GRPO gets a signal.
PROBE_REWARD = textwrap.dedent("""
    import json, os

    def probe(completions, answers):
        with open(os.environ["GRPO_PROBE_LOG"], "a") as f:
            f.write(json.dumps({"n": len(completions), "answers": list(answers)}) + "\\n")
        return [(len(text) % 11) / 10 for text in completions]
""")

SETTINGS = ["adapter.init=fresh", "task.arithmetic.train_size=40", "task.arithmetic.validation_size=8",
            "task.arithmetic.test_size=8", "runtime.eval_items=8", "runtime.test_items=8",
            "engine.max_tokens=16", "grpo.steps=2", "grpo.prompts_per_step=2", "grpo.num_generations=2",
            "grpo.learning_rate=1e-3", "grpo.eval_every=1", "grpo.threads=1", "task.reward=probe_reward:probe"]


@pytest.fixture(scope="module")
def grpo_run(demo_model, tmp_path_factory):
    """One tiny essa-grpo run (2 steps of 2 prompts x 2 completions, 8 evaluation items)."""
    root = tmp_path_factory.mktemp("grpo")
    (root / "probe_reward.py").write_text(PROBE_REWARD)
    overrides = [*SETTINGS, f"model.path={demo_model}", f"output_dir={root / 'runs'}", "name=tiny-grpo"]
    args = ["essa", "grpo"] + [a for o in overrides for a in ("--set", o)]
    env = {"PYTHONPATH": str(root), "GRPO_PROBE_LOG": str(root / "probe.jsonl")}
    t0 = time.time()
    proc = run_cli(args, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return SimpleNamespace(dir=root / "runs" / "tiny-grpo", proc=proc, seconds=time.time() - t0,
                           probe=[json.loads(x) for x in (root / "probe.jsonl").read_text().splitlines()],
                           config=load_config(None, overrides), args=args, env=env)


@pytest.mark.model
def test_grpo_writes_the_essa_run_directory(grpo_run):
    run = grpo_run.dir
    for name in ("config.yaml", "run.log", "metrics.jsonl", "summary.json",
                 "adapter_final/adapter_config.json", "adapter_final/adapter_model.safetensors"):
        assert (run / name).is_file(), name
    saved = load_config(run / "config.yaml")
    assert saved.grpo.num_generations == 2 and saved.grpo.steps == 2
    records = read_metrics(run / "metrics.jsonl")
    val = [r for r in records if r["phase"] == "validation"]
    # The start (generation -1, before training) and after each of the 2 steps (eval_every 1).
    assert [r["generation"] for r in val] == [-1, 1, 2]
    assert {k for r in val for k in r} == {"time", "generation", "phase", "val_accuracy", "val_items",
                                           "wall_time", "tokens_total"}
    assert val[0]["wall_time"] == 0 and val[0]["tokens_total"] == 0
    walls, tokens = [r["wall_time"] for r in val], [r["tokens_total"] for r in val]
    assert walls == sorted(walls) and len(set(walls)) == 3
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    assert all(r["val_items"] == 8 and 0 <= r["val_accuracy"] <= 1 for r in val)

    train = [r for r in records if r["phase"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert 0 <= r["reward_mean"] <= 1
        assert 0 < r["tokens"] <= 2 * 2 * 16  # prompts x completions x max_completion_length
    assert sum(r["tokens"] for r in train) == train[-1]["tokens_total"] == val[-1]["tokens_total"]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "grpo" and summary["steps"] == 2 and summary["stopped_by"] == "steps"
    assert summary["tokens"] == val[-1]["tokens_total"]
    assert summary["wall_time"] >= val[-1]["wall_time"] > 0
    assert summary["adapters"]["final"] == str(run / "adapter_final")
    assert summary["test"]["items"] == 8
    assert set(summary["test"]["accuracy"]) == {"start", "final"}
    log_text = (run / "run.log").read_text()
    assert "validation accuracy of the start" in log_text and "summary: 2 steps" in log_text
    assert "GRPO set-up: cpu, float32; generation transformers; gradient checkpointing off" in log_text
    print(f"essa-grpo tiny run: {grpo_run.seconds:.0f} s")


@pytest.mark.model
def test_grpo_scores_with_the_tasks_reward_on_the_same_data(grpo_run):
    """Every reward call went through essa.rewards (the user reward), with the task's gold answers."""
    from essa.data import load_task

    task = load_task(grpo_run.config.task)
    train_answers = {e.answer for e in task.split("train")}
    val_answers = [e.answer for e in task.split("validation")[:8]]
    test_answers = [e.answer for e in task.split("test")[:8]]
    calls = grpo_run.probe
    training = [c for c in calls if c["n"] == 4]  # 2 prompts x 2 completions per step
    assert len(training) == 2
    for c in training:
        # Groups: each prompt's num_generations completions are scored against its own answer.
        assert c["answers"][0] == c["answers"][1] and c["answers"][2] == c["answers"][3]
        assert set(c["answers"]) <= train_answers
    evaluations = [c["answers"] for c in calls if c["n"] == 8]
    assert evaluations.count(val_answers) == 3 and evaluations.count(test_answers) == 2


@pytest.mark.model
def test_grpo_trains_the_adapter_and_saves_a_loadable_peft_folder(grpo_run, demo_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(demo_model), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(grpo_run.dir / "adapter_final"))
    b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(b) == 30 * 4  # 30 layers x q, k, v, o
    # A fresh LoRA starts with B = 0: a non-zero B means the GRPO updates reached the adapter.
    assert max(float(p.abs().max()) for p in b) > 0
    cfg = json.loads((grpo_run.dir / "adapter_final" / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16
    assert sorted(cfg["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]


@pytest.mark.model
def test_grpo_refuses_to_overwrite_a_run(grpo_run):
    proc = run_cli(grpo_run.args, env=grpo_run.env, timeout=120)
    assert proc.returncode == 2
    assert str(grpo_run.dir) in proc.stderr and "--force" in proc.stderr


@pytest.mark.model
def test_grpo_missing_adapter_folder_is_a_clear_error(demo_model, tmp_path):
    missing = tmp_path / "no-such-adapter"
    proc = run_cli(["essa", "grpo", "--set", f"model.path={demo_model}", "--set",
                    f"output_dir={tmp_path}", "--set", f"adapter.init={missing}"], timeout=300)
    assert proc.returncode == 2 and f"essa-grpo: adapter.init: {missing}" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- the pieces: reward wrapper, clock and budget ---------------------------------------------------


def test_reward_func_is_essas_reward_and_counts_completion_tokens():
    from essa.baselines.grpo import TokenCount, essa_reward_func
    from essa.rewards import get_reward

    counter = TokenCount()
    fn = essa_reward_func(get_reward("arithmetic"), counter, "essa_arithmetic")
    scores = fn(prompts=["p"] * 3, completions=["so 3 + 4 = 7\n#### 7", "#### 8",
                                                [{"role": "assistant", "content": "#### 7"}]],
                completion_ids=[[1, 2], [3], [4, 5, 6]], answer=["7", "7", "7"],
                question=["3 + 4?"] * 3, trainer_state=None)
    assert scores == [1.0, 0.0, 1.0]
    assert counter.total == 6 and fn.__name__ == "essa_arithmetic"
    # the reward sees the question column (plain text), not TRL's chat-templated prompts
    seen = []
    echo = essa_reward_func(lambda texts, golds, prompts=None: seen.extend(prompts) or [0.0] * len(texts),
                            counter, "echo")
    echo(prompts=["<|im_start|>user\nQ1", "<|im_start|>user\nQ2"], completions=["a", "b"],
         completion_ids=[[1], [2]], answer=["1", "2"], question=["Q1", "Q2"])
    assert seen == ["Q1", "Q2"]


class _SlowScorer:
    """Stands in for the greedy scorer: takes `seconds` and returns a fixed accuracy."""

    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, []

    def accuracy(self, model, split, limit):
        time.sleep(self.seconds)
        self.calls.append((split, limit))
        return 0.25, limit


def test_recorder_stops_at_the_wall_time_budget_and_excludes_evaluation_time(tmp_path):
    from transformers import TrainerControl

    from essa.baselines.grpo import RunRecorder, TokenCount

    config = load_config(None, ["grpo.max_wall_time_s=10", "grpo.eval_every=0", "runtime.eval_items=5"])
    scorer = _SlowScorer(0.5)
    recorder = RunRecorder(config, None, scorer, MetricsWriter(tmp_path / "metrics.jsonl"), TokenCount(7))
    state, control = SimpleNamespace(global_step=3, max_steps=100), TrainerControl()
    recorder.on_train_begin(None, state, control)
    recorder.t_start -= 5.0  # five seconds of training so far: under the budget, no validation
    recorder.on_step_end(None, state, control)
    assert not control.should_training_stop and scorer.calls == []

    recorder.t_start -= 6.0  # eleven seconds: over the budget -> stop, validate the last step
    state.global_step = 4
    recorder.on_step_end(None, state, control)
    assert control.should_training_stop and recorder.stop_reason == "max_wall_time_s"
    assert scorer.calls == [("validation", 5)]
    (rec,) = read_metrics(tmp_path / "metrics.jsonl")
    assert rec["phase"] == "validation" and rec["generation"] == 4 and rec["tokens_total"] == 7
    assert 11.0 <= rec["wall_time"] < 11.4
    # The 0.5 s of validation is not training time.
    assert recorder.eval_seconds >= 0.5
    assert abs(recorder.final_seconds - rec["wall_time"]) < 0.3

    recorder.on_log(None, state, control, logs={"reward": 0.5, "reward_std": 0.1, "loss": 0.02,
                                                "learning_rate": 1e-3})
    recorder.on_log(None, state, control, logs={"train_runtime": 12.0})  # end-of-training log: skipped
    train = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["phase"] == "train"]
    assert len(train) == 1
    assert train[0]["reward_mean"] == 0.5 and train[0]["tokens"] == 7 and train[0]["step"] == 4


def test_grpo_config_section_is_validated():
    from essa.config import ConfigError

    with pytest.raises(ConfigError, match="grpo.num_generations"):
        load_config(None, ["grpo.num_generations=1"])
    with pytest.raises(ConfigError, match="grpo.temperature"):
        load_config(None, ["grpo.temperature=0"])
    with pytest.raises(ConfigError, match="grpo.max_completion_length"):
        load_config(None, ["grpo.max_completion_length=5000"])
    assert load_config(None, ["grpo.max_wall_time_s=90"]).grpo.max_wall_time_s == 90.0


# ---- essa compare -------------------------------------------------------------------------------------


def _write_run(folder: Path, name: str, validation: list[tuple], summary: dict | None,
               extra: list[dict] = ()) -> Path:
    """A fabricated run directory: config.yaml, metrics.jsonl (validation records
    (generation, accuracy, wall_time, tokens_total) plus ``extra``), summary.json."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"name": name, "seed": 0}))
    lines = [{"generation": g, "phase": "validation", "val_accuracy": a, "val_items": 100,
              "wall_time": w, "tokens_total": t} for g, a, w, t in validation]
    lines += list(extra)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def two_runs(tmp_path):
    essa = _write_run(
        tmp_path / "essa-run", "essa-a",
        [(-1, 0.30, 0.0, 0), (4, 0.40, 100.0, 5000), (9, 0.50, 200.0, 10000)],
        {"generations": 10, "tokens": 10500, "wall_time": 210.0,
         "test": {"items": 100, "accuracy": {"base": 0.1, "start": 0.3, "mean": 0.48}}},
        extra=[{"generation": 0, "phase": "search", "fitness_max": 0.9, "wall_time": 20.0}])
    grpo = _write_run(
        tmp_path / "grpo-run", "grpo-b",
        # written out of order: the curve is sorted by wall time
        [(-1, 0.30, 0.0, 0), (10, 0.45, 400.0, 4000), (5, 0.35, 150.0, 2000)],
        {"method": "grpo", "steps": 10, "tokens": 4100, "wall_time": 410.0,
         "test": {"items": 100, "accuracy": {"start": 0.3, "final": 0.44}}},
        extra=[{"generation": 1, "phase": "train", "step": 1, "reward_mean": 0.9, "wall_time": 30.0}])
    return essa, grpo


def test_compare_time_and_tokens_to_the_default_target(two_runs):
    curves = [load_curve(d) for d in two_runs]
    assert [c.method for c in curves] == ["essa", "grpo"]
    assert curves[1].wall_time == [0.0, 150.0, 400.0] and curves[1].accuracy == [0.30, 0.35, 0.45]
    target, rows = compare(curves)
    assert target == pytest.approx(0.45)  # the lower of the best accuracies (0.50, 0.45)
    essa, grpo = rows
    assert (essa.time_to_target, essa.tokens_to_target) == (200.0, 10000)  # 0.40 < 0.45 at 100 s
    assert (grpo.time_to_target, grpo.tokens_to_target) == (400.0, 4000)
    assert essa.speed_ratio == pytest.approx(1.0) and grpo.speed_ratio == pytest.approx(2.0)
    assert curves[0].test_accuracy() == (0.48, 100) and curves[1].test_accuracy() == (0.44, 100)


def test_compare_writes_table_and_png_and_marks_not_reached(two_runs, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(["essa", "compare", *map(str, two_runs), "--output", str(out), "--target", "0.5"])
    assert proc.returncode == 0, proc.stderr
    md = (out / "compare.md").read_text()
    assert md.strip() in proc.stdout
    assert "Target validation accuracy: 50.0% (given with --target)" in md
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| essa-a") or line.startswith("| grpo-b")}
    essa, grpo = rows["essa-a"], rows["grpo-b"]
    # run, method, start, best, final, test, wall time, tokens, time to target, tokens to target, ratio
    assert essa == ["essa-a", "essa", "30.0%", "50.0%", "50.0%", "48.0% (100 items)", "210.0 s",
                    "10,500", "200.0 s", "10,000", "1.00"]
    assert grpo == ["grpo-b", "grpo", "30.0%", "45.0%", "45.0%", "44.0% (100 items)", "410.0 s",
                    "4,100", "not reached", "not reached", "-"]
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    height, width = matplotlib.image.imread(out / "compare.png").shape[:2]
    assert width > 1.5 * height  # two panels side by side


def test_compare_reference_run_not_reaching_target_gives_no_ratio(two_runs, tmp_path):
    text, md_path, png_path = write_comparison(list(reversed(two_runs)), tmp_path / "o", target=0.5)
    assert png_path.is_file() and md_path.read_text() == text
    target, rows = compare([load_curve(d) for d in reversed(two_runs)], 0.5)
    assert rows[0].time_to_target is None and rows[1].time_to_target == 200.0
    assert [r.speed_ratio for r in rows] == [None, None]


def test_compare_names_the_folder_without_metrics(tmp_path, two_runs):
    bad = tmp_path / "not-a-run"
    bad.mkdir()
    (bad / "config.yaml").write_text("name: x\n")
    proc = run_cli(["essa", "compare", str(two_runs[0]), str(bad), "--output", str(tmp_path / "o")])
    assert proc.returncode == 2
    assert f"{bad}: no metrics.jsonl" in proc.stderr
    assert not (tmp_path / "o" / "compare.md").exists()
    with pytest.raises(CompareError, match="no such run directory"):
        load_curve(tmp_path / "missing")
    empty = _write_run(tmp_path / "unvalidated", "u", [], None,
                       extra=[{"generation": 0, "phase": "search", "wall_time": 1.0}])
    with pytest.raises(CompareError, match="no validation records"):
        load_curve(empty)


# ---- essa-grpo on CPU or CUDA: the set-up, TRL's arguments, several processes, the batch script -----

CPU_BF16 = "cpu", "EPYC", False, "AVX512", frozenset({"avx512_bf16"})  # native bf16, still float32


def _device(kind: str, bf16: bool = True):
    from essa.models.dtype import Device

    if kind == "cpu":
        return Device(*CPU_BF16)
    return Device("cuda", "NVIDIA H200" if bf16 else "Tesla V100", cuda_bf16=bf16)


def _grpo(*overrides):
    return load_config(None, list(overrides)).grpo


def test_grpo_setup_on_the_cpu_is_the_demos_float32_path():
    from essa.baselines.grpo import decide_grpo_setup

    for requested in ("auto", "cpu"):
        for dev in (_device("cpu"), _device("cuda")) if requested == "cpu" else (_device("cpu"),):
            setup = decide_grpo_setup(_grpo(f"grpo.device={requested}"), dev, vllm_available=True)
            assert (setup.device, setup.dtype, setup.bf16) == ("cpu", "float32", False)
            assert setup.use_cpu and setup.generation == "transformers"
            assert not setup.gradient_checkpointing  # auto: off on the CPU
    setup = decide_grpo_setup(_grpo("grpo.gradient_checkpointing=true"), _device("cpu"), True)
    assert setup.gradient_checkpointing and setup.use_cpu
    line = decide_grpo_setup(_grpo(), _device("cpu"), True).describe()
    assert line.startswith("cpu, float32; generation transformers; gradient checkpointing off; 1 process")


def test_grpo_setup_on_cuda_with_bf16_and_vllm_colocates():
    from essa.baselines.grpo import decide_grpo_setup

    setup = decide_grpo_setup(_grpo("grpo.vllm_gpu_memory_utilization=0.4"), _device("cuda"), True)
    assert (setup.device, setup.dtype, setup.bf16, setup.generation) == ("cuda:0", "bfloat16", True, "vllm")
    assert setup.gradient_checkpointing and not setup.use_cpu
    assert setup.vllm_gpu_memory_utilization == 0.4
    import torch
    assert setup.torch_dtype is torch.bfloat16
    line = setup.describe()
    assert "cuda:0" in line and "bf16 autocast" in line and "vllm (colocate, 40% of GPU memory)" in line
    assert "NVIDIA H200 with bf16" in line
    # A GPU without bf16: float32, no autocast.
    old = decide_grpo_setup(_grpo(), _device("cuda", bf16=False), True)
    assert (old.dtype, old.bf16, old.generation) == ("float32", False, "vllm")
    # Explicit choices are kept.
    chosen = decide_grpo_setup(_grpo("grpo.generation=transformers", "grpo.gradient_checkpointing=off",
                                     "grpo.device=cuda"), _device("cuda"), True)
    assert (chosen.generation, chosen.gradient_checkpointing) == ("transformers", False)


def test_grpo_setup_on_cuda_without_vllm_uses_transformers():
    from essa.baselines.grpo import decide_grpo_setup
    from essa.config import ConfigError

    setup = decide_grpo_setup(_grpo(), _device("cuda"), vllm_available=False)
    assert (setup.device, setup.bf16, setup.generation) == ("cuda:0", True, "transformers")
    assert "vllm is not installed" in setup.describe()
    with pytest.raises(ConfigError, match="grpo.generation: vllm, but vllm is not installed"):
        decide_grpo_setup(_grpo("grpo.generation=vllm"), _device("cuda"), vllm_available=False)


def test_grpo_setup_errors_name_the_field():
    from essa.baselines.grpo import decide_grpo_setup
    from essa.config import ConfigError

    with pytest.raises(ConfigError, match="grpo.generation: vllm needs a CUDA GPU"):
        decide_grpo_setup(_grpo("grpo.generation=vllm"), _device("cpu"), vllm_available=True)
    with pytest.raises(ConfigError, match="grpo.generation: .*grpo.device is cpu"):
        decide_grpo_setup(_grpo("grpo.generation=vllm", "grpo.device=cpu"), _device("cuda"), True)
    with pytest.raises(ConfigError, match="grpo.device: cuda:1 but this process sees no CUDA GPU"):
        decide_grpo_setup(_grpo("grpo.device=cuda:1"), _device("cpu"), True)
    with pytest.raises(ConfigError, match="grpo.device"):
        load_config(None, ["grpo.device=gpu"])


def test_grpo_setup_picks_the_gpu_of_each_process():
    from essa.baselines.grpo import decide_grpo_setup
    from essa.config import ConfigError

    # Under accelerate launch: the local rank's GPU, each with its colocated vLLM engine.
    setup = decide_grpo_setup(_grpo(), _device("cuda"), True, processes=8, local_rank=3)
    assert (setup.device, setup.generation, setup.processes) == ("cuda:3", "vllm", 8)
    assert "8 processes" in setup.describe()
    with pytest.raises(ConfigError, match="grpo.device: cuda:1 picks one GPU"):
        decide_grpo_setup(_grpo("grpo.device=cuda:1"), _device("cuda"), True, processes=2)
    # 4 prompts x 8 completions do not split over 3 processes.
    with pytest.raises(ConfigError, match="grpo.prompts_per_step"):
        decide_grpo_setup(_grpo(), _device("cuda"), True, processes=3)
    # One process on cuda:1: TRL's colocated engine would sit on cuda:0, so transformers (auto).
    one = decide_grpo_setup(_grpo("grpo.device=cuda:1"), _device("cuda"), True)
    assert (one.device, one.generation) == ("cuda:1", "transformers")
    assert "CUDA_VISIBLE_DEVICES=1" in one.describe()
    with pytest.raises(ConfigError, match="grpo.generation: vllm, but TRL's colocated"):
        decide_grpo_setup(_grpo("grpo.device=cuda:1", "grpo.generation=vllm"), _device("cuda"), True)


def test_launch_ranks_come_from_the_launchers_environment():
    from essa.baselines.grpo import launch_ranks

    assert launch_ranks({}) == (0, 0, 1)
    assert launch_ranks({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}) == (5, 1, 8)


def test_grpo_arguments_on_the_cpu(tmp_path):
    from essa.baselines.grpo import decide_grpo_setup, grpo_argument_values, grpo_arguments

    config = load_config(None, ["grpo.prompts_per_step=2", "grpo.num_generations=4", "grpo.steps=7"])
    setup = decide_grpo_setup(config.grpo, _device("cpu"), True)
    values = grpo_argument_values(config, tmp_path, False, setup)
    assert values["use_cpu"] is True and values["bf16"] is False and values["fp16"] is False
    assert values["use_vllm"] is False and values["gradient_checkpointing"] is False
    assert "vllm_mode" not in values and "gradient_checkpointing_kwargs" not in values
    assert values == grpo_argument_values(config, tmp_path, False)  # no set-up: the CPU one
    args = grpo_arguments(config, tmp_path, False, setup)  # TRL accepts them here
    assert args.use_cpu and not args.bf16 and not args.use_vllm and not args.gradient_checkpointing
    assert args.per_device_train_batch_size == 8 and args.max_steps == 7 and args.num_generations == 4
    assert args.output_dir == str(tmp_path / "trainer")


def test_grpo_arguments_on_cuda(tmp_path):
    """TRL refuses bf16 without a GPU, so the CUDA arguments are checked as values (and as
    GRPOConfig field names)."""
    import dataclasses

    from trl import GRPOConfig

    from essa.baselines.grpo import decide_grpo_setup, grpo_argument_values

    config = load_config(None, ["grpo.prompts_per_step=2", "grpo.num_generations=4",
                                "grpo.vllm_gpu_memory_utilization=0.45"])
    setup = decide_grpo_setup(config.grpo, _device("cuda"), True, processes=4, local_rank=2)
    values = grpo_argument_values(config, tmp_path, True, setup)
    assert values["use_cpu"] is False and values["bf16"] is True and values["fp16"] is False
    assert values["use_vllm"] is True and values["vllm_mode"] == "colocate"
    assert values["vllm_gpu_memory_utilization"] == 0.45
    assert values["gradient_checkpointing"] is True
    assert values["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    assert values["per_device_train_batch_size"] == 2  # 2 prompts x 4 completions over 4 processes
    assert values["disable_tqdm"] is False
    assert set(values) <= {f.name for f in dataclasses.fields(GRPOConfig)}
    no_vllm = decide_grpo_setup(config.grpo, _device("cuda"), vllm_available=False)
    plain = grpo_argument_values(config, tmp_path, True, no_vllm)
    assert plain["use_vllm"] is False and "vllm_mode" not in plain and plain["bf16"] is True


class _FakeAccelerator:
    """Two processes: the other one sampled ``other_tokens`` tokens and votes ``other_stop``."""

    def __init__(self, main: bool, other_tokens: int, other_stop: int = 0):
        self.is_main_process, self.num_processes, self.device = main, 2, "cpu"
        self.other = [other_tokens, other_stop]

    def reduce(self, tensor, reduction):
        import torch
        assert reduction == "sum"
        return tensor + torch.tensor(self.other)


def test_recorder_on_other_processes_writes_nothing_and_follows_the_main_ones_stop(tmp_path):
    from transformers import TrainerControl

    from essa.baselines.grpo import RunRecorder, TokenCount

    config = load_config(None, ["grpo.max_wall_time_s=10", "grpo.eval_every=1"])
    scorer, tokens = _SlowScorer(0.0), TokenCount()
    recorder = RunRecorder(config, None, scorer, MetricsWriter(tmp_path / "metrics.jsonl"), tokens)
    recorder.attach(_FakeAccelerator(main=False, other_tokens=5, other_stop=1))
    state, control = SimpleNamespace(global_step=1, max_steps=100), TrainerControl()
    recorder.on_train_begin(None, state, control)
    assert recorder.validate(-1) is None
    tokens.total += 3  # this process's completions
    recorder.on_step_end(None, state, control)
    assert control.should_training_stop and recorder.stop_reason == "max_wall_time_s"
    assert tokens.total == 8 and scorer.calls == []  # both processes' tokens; no validation here
    recorder.on_log(None, state, control, logs={"reward": 0.5})
    assert not (tmp_path / "metrics.jsonl").exists()

    # The main process: its own budget is not spent, the sum says go on; it validates and writes.
    main_tokens = TokenCount()
    main = RunRecorder(config, None, scorer, MetricsWriter(tmp_path / "metrics.jsonl"), main_tokens)
    main.attach(_FakeAccelerator(main=True, other_tokens=4))
    control = TrainerControl()
    main.on_train_begin(None, state, control)
    main_tokens.total += 6
    main.on_step_end(None, state, control)
    assert not control.should_training_stop and main_tokens.total == 10
    main_tokens.total += 1  # the next step: only the new tokens are summed again
    state.global_step = 2
    main.on_step_end(None, state, control)
    assert main_tokens.total == 15
    assert [r["tokens_total"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [10, 15]


def test_greedy_scoring_moves_its_inputs_to_the_models_device():
    """GRPO's validation on a GPU: hf_greedy_completions builds its batch on the model's device."""
    import torch

    from essa.sft.evaluate import hf_greedy_completions

    seen = {}

    class Model:
        device = torch.device("meta")

        def eval(self):
            seen["eval"] = True

        def generate(self, **kwargs):
            seen.update({k: v.device.type if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()
                         if k in ("input_ids", "attention_mask", "max_new_tokens")})
            return torch.tensor([[5, 6, 7, 9, 8]])  # the 2 prompt tokens, then 7, the stop id 9, 8

    class Tokenizer:
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return type("Encoded", (), {"input_ids": [5, 6]})

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    out = hf_greedy_completions(Model(), Tokenizer(), ["q"], max_tokens=3, stop_id=9)
    assert seen == {"eval": True, "input_ids": "meta", "attention_mask": "meta", "max_new_tokens": 3}
    assert [(c.text, c.num_tokens) for c in out] == [("7 9", 2)]


@pytest.mark.model
def test_grpo_check_prints_the_plan_and_refuses_what_cannot_run(tmp_path, demo_model):
    base = ["essa", "grpo", "--check", "--set", f"output_dir={tmp_path}", "--set", "name=g",
            "--set", "adapter.init=fresh", "--set", f"model.path={demo_model}"]
    proc = run_cli(base, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"run_dir={tmp_path / 'g'}" in lines and "processes=1" in lines and "warm_start=0" in lines
    assert any(x.startswith("setup=cpu, float32; generation transformers") for x in lines)
    assert [x for x in lines if x.startswith("arg=")] == [
        "arg=--set", f"arg=output_dir={tmp_path}", "arg=--set", "arg=name=g",
        "arg=--set", "arg=adapter.init=fresh", "arg=--set", f"arg=model.path={demo_model}"]
    assert not (tmp_path / "g").exists()  # nothing written

    proc = run_cli(base + ["--set", f"adapter.init={tmp_path / 'no-adapter'}"], timeout=300)
    assert proc.returncode == 2 and f"essa-grpo: adapter.init: {tmp_path / 'no-adapter'}" in proc.stderr
    proc = run_cli(base + ["--set", f"model.path={tmp_path / 'no-model'}"], timeout=300)
    assert proc.returncode == 2 and "model folder not found" in proc.stderr

    proc = run_cli(base + ["--set", "grpo.generation=vllm"], timeout=300)
    assert proc.returncode == 2 and "grpo.generation: vllm needs a CUDA GPU" in proc.stderr
    # Three processes cannot split a step's 4 x 8 completions.
    proc = run_cli(base, env={"WORLD_SIZE": "3"}, timeout=300)
    assert proc.returncode == 2 and "grpo.prompts_per_step" in proc.stderr
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "metrics.jsonl").write_text("")
    proc = run_cli(base, timeout=300)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert "Traceback" not in proc.stderr


SBATCH = Path(__file__).resolve().parents[1] / "launch" / "slurm" / "essa-grpo.sbatch"


def test_grpo_sbatch_is_valid_bash_and_launches_essa_grpo_with_accelerate():
    import subprocess

    text = SBATCH.read_text()
    assert subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True).returncode == 0
    assert "accelerate launch" in text and "-m essa.cli.grpo" in text
    assert "#SBATCH --nodes=1" in text and "#SBATCH --no-requeue" in text
    assert "not resumable" in text.lower() and "grpo.max_wall_time_s" in text


def _stub(path: Path, body: str) -> str:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("check_rc", [0, 2])
def test_grpo_sbatch_checks_then_starts_one_process_per_gpu(tmp_path, check_rc):
    """The script with stand-ins for python and accelerate: the check first (exit 2 ends the job),
    then `accelerate launch` with one process per GPU and the job's arguments."""
    import subprocess

    calls = tmp_path / "calls.txt"
    python = _stub(tmp_path / "python", f"""echo "python WORLD_SIZE=$WORLD_SIZE $*" >> {calls}
printf 'run_dir=runs/x\\nsetup=cuda:0\\nprocesses=%s\\nwarm_start=0\\nmax_wall_time_s=60\\n' "$WORLD_SIZE"
printf 'arg=--config\\narg=%s\\n' "$5"
exit {check_rc}
""")
    accelerate = _stub(tmp_path / "accelerate", f'echo "accelerate $*" >> {calls}\nexit 7\n')
    root = SBATCH.parents[2]
    env = {"PATH": "/usr/bin:/bin", "ESSA_HOME": str(root), "ESSA_PYTHON": python,
           "ESSA_ACCELERATE": accelerate, "ESSA_GPUS": "4"}
    proc = subprocess.run(["bash", str(SBATCH), "cfg.yaml", "--set", "name=g"], env=env,
                          capture_output=True, text=True, timeout=60)
    lines = calls.read_text().splitlines()
    assert lines[0] == "python WORLD_SIZE=4 -m essa.cli.grpo --check --config cfg.yaml --set name=g"
    if check_rc:
        assert proc.returncode == 2 and len(lines) == 1
        return
    assert proc.returncode == 7  # the training step's status
    assert lines[1] == ("accelerate launch --num_machines 1 --num_processes 4 --mixed_precision no "
                        "--dynamo_backend no --multi_gpu -m essa.cli.grpo --config cfg.yaml --set name=g")
