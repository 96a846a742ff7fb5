"""Cluster launch: sweep files and cells, `essa sweep`, the SLURM batch scripts (with fake srun /
scontrol), the summary table, and the paper configs under `essa-train --dry-run` (config only)."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from essa.cluster.summary import sweep_rows, to_csv, to_markdown
from essa.cluster.sweep import SweepError, load_sweep
from tests.conftest import ROOT, VENV_BIN, run_cli

SLURM = ROOT / "launch" / "slurm"
CONFIGS = ROOT / "launch" / "configs"
DEMO_SWEEP = ROOT / "launch" / "sweeps" / "demo-cpu-small.yaml"

# Real architecture numbers (from each model's config.json); the dry run only reads this file.
ARCHITECTURES = {
    "qwen2.5-7b": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                   "num_hidden_layers": 28, "hidden_size": 3584, "intermediate_size": 18944,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                   "max_position_embeddings": 4096},
    "qwen2.5-32b": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                    "num_hidden_layers": 64, "hidden_size": 5120, "intermediate_size": 27648,
                    "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064,
                    "max_position_embeddings": 131072},
    "llama3.1-8b": {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                    "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                    "max_position_embeddings": 131072},
}
PAPER_CONFIGS = {
    "qwen2.5-math-7b-gsm8k.yaml": "qwen2.5-7b",
    "qwen2.5-math-7b-math.yaml": "qwen2.5-7b",
    "qwen2.5-32b-math-int4.yaml": "qwen2.5-32b",
    "qwen2.5-32b-math-int8.yaml": "qwen2.5-32b",
    "qwen2.5-32b-math-bf16.yaml": "qwen2.5-32b",
    "llama3.1-8b-gsm8k.yaml": "llama3.1-8b",
    "llama3.1-8b-ifeval.yaml": "llama3.1-8b",
}


def write_sweep(tmp_path: Path, **fields) -> Path:
    """A sweep file over the demo config; output goes under tmp_path/runs."""
    spec = {"base": str(CONFIGS / "demo-cpu.yaml"), "name": "t", "output_dir": str(tmp_path / "runs"),
            "grid": {"adapter.rank": [4, 8], "search.popsize": [6, 8, 10]},
            "set": {"search.generations": 2}, "labels": {"adapter.rank": "r", "search.popsize": "pop"}}
    spec.update(fields)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ---- sweep files and cells -------------------------------------------------------------------

def test_cells_are_the_cartesian_product_last_key_fastest(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path))
    cells = sweep.cells()
    assert sweep.size == len(cells) == 6
    assert [(c.values["adapter.rank"], c.values["search.popsize"]) for c in cells] == [
        (4, 6), (4, 8), (4, 10), (8, 6), (8, 8), (8, 10)]
    assert [c.index for c in cells] == list(range(6))
    assert cells[4].run_name == "t-c04-r8-pop8"
    # fixed overrides first, then the grid values, output_dir, and the run name last
    assert cells[4].overrides == ["search.generations=2", "adapter.rank=8", "search.popsize=8",
                                  f"output_dir={tmp_path / 'runs'}", "name=t-c04-r8-pop8"]
    assert len({c.run_name for c in cells}) == 6  # every cell its own run directory


def test_the_paper_sweep_is_a_54_cell_grid_over_the_four_table7_axes():
    sweep = load_sweep(ROOT / "launch" / "sweeps" / "qwen7b-gsm8k-table7.yaml")
    assert list(sweep.grid) == ["adapter.rank", "search.popsize", "adapter.alpha_frac",
                                "fitness.prompts_per_candidate"]
    assert sweep.size == 54 and sweep.base == CONFIGS / "qwen2.5-math-7b-gsm8k.yaml"
    assert sweep.cells()[53].run_name == "qwen7b-table7-c53-r32-pop96-af1.0-b500"


@pytest.mark.parametrize("fields, message", [
    ({"grid": {"adapter.rank": [4, 4]}}, "lists a value twice"),
    ({"grid": {"adapter.rank": []}}, "non-empty list"),
    ({"set": {"adapter.rank": 2}}, "both 'grid' and 'set'"),
    ({"base": "nowhere.yaml"}, "base config not found"),
    ({"gird": {}}, "unknown keys ['gird']"),
])
def test_bad_sweep_files_are_errors_naming_the_problem(tmp_path, fields, message):
    with pytest.raises(SweepError, match=re.escape(message)):
        load_sweep(write_sweep(tmp_path, **fields))


def test_cell_index_outside_the_grid_names_the_range(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path))
    with pytest.raises(SweepError, match="valid indices are 0-5"):
        sweep.cell(6)
    with pytest.raises(SweepError, match="SLURM_ARRAY_TASK_ID"):
        sweep.cell(None)


# ---- essa sweep (the real CLI) ---------------------------------------------------------------

def test_array_task_id_selects_the_cell_and_its_config_has_the_cell_values(tmp_path):
    path = write_sweep(tmp_path)
    out = run_cli(["essa", "sweep", "cell", str(path), "--dry-run"], env={"SLURM_ARRAY_TASK_ID": "4"})
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout.strip())
    assert argv[0] == "essa-train" and "--resume" not in argv
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert sets[-2:] == [f"output_dir={tmp_path / 'runs'}", "name=t-c04-r8-pop8"]
    assert "adapter.rank=8" in sets and "search.popsize=8" in sets

    resolved = run_cli([*argv, "--print-config"])
    assert resolved.returncode == 0, resolved.stderr
    config = yaml.safe_load(resolved.stdout)
    assert config["adapter"]["rank"] == 8 and config["search"]["popsize"] == 8
    assert config["search"]["generations"] == 2 and config["name"] == "t-c04-r8-pop8"

    # a committed checkpoint in the cell's run directory -> the command resumes it
    ckpt = tmp_path / "runs" / "t-c04-r8-pop8" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"generation": 1, "strategy_file": "strategy-1.ckpt"}))
    again = run_cli(["essa", "sweep", "cell", str(path), "--index", "4", "--dry-run"])
    assert shlex.split(again.stdout.strip())[-2:] == ["--resume", str(ckpt.parent)]


def test_cell_out_of_range_or_missing_index_exits_2_naming_the_range(tmp_path):
    path = write_sweep(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SLURM_ARRAY_TASK_ID"}
    out = run_cli(["essa", "sweep", "cell", str(path), "--dry-run"], env={"SLURM_ARRAY_TASK_ID": "6"})
    assert out.returncode == 2 and "out of range" in out.stderr and "0-5" in out.stderr
    out = subprocess.run([str(VENV_BIN / "essa"), "sweep", "cell", str(path), "--dry-run"], env=env,
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "SLURM_ARRAY_TASK_ID" in out.stderr and "0-5" in out.stderr


def test_sbatch_dry_run_prints_the_array_and_without_sbatch_it_is_an_error(tmp_path):
    path = write_sweep(tmp_path, slurm={"nodes": 2, "gpus-per-node": 8})
    out = run_cli(["essa", "sweep", "sbatch", str(path), "--dry-run", "--max-parallel", "2",
                   "--", "--partition=gpu"])
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout.strip())
    assert argv[:3] == ["sbatch", "--array=0-5%2", "--job-name=t"]
    assert "--nodes=2" in argv and "--gpus-per-node=8" in argv and "--partition=gpu" in argv
    assert argv[-2].endswith("launch/slurm/essa-sweep.sbatch") and argv[-1] == str(path)
    if shutil.which("sbatch") is None:
        out = run_cli(["essa", "sweep", "sbatch", str(path)])
        assert out.returncode == 2 and "sbatch is not on PATH" in out.stderr


# ---- the batch scripts -----------------------------------------------------------------------

FAKE_SRUN = """#!/bin/bash
echo "$*" >> "$FAKE_LOG/srun.log"
case "$*" in *essa-train*) ;; *) exit 0 ;; esac
if [ "${FAKE_MODE:-}" = wait ]; then  # a run that stops after a checkpoint on USR1
    trap 'echo USR1 >> "$FAKE_LOG/signals.log"; exit 75' USR1
    touch "$FAKE_LOG/started"
    while :; do sleep 0.1; done
fi
exit "${FAKE_RC:-0}"
"""
FAKE_SCONTROL = """#!/bin/bash
if [ "$1" = show ]; then printf 'gpu-a\\ngpu-b\\n'; exit 0; fi
echo "$*" >> "$FAKE_LOG/scontrol.log"
"""


@pytest.fixture
def fake_slurm(tmp_path):
    """A bin folder with recording srun / scontrol and the environment of a 2-node job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{VENV_BIN}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path),
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu-[a-b]", "ESSA_LAUNCHER": "srun",
           "ESSA_HOME": str(ROOT), "ESSA_PYTHON": str(VENV_BIN / "python"), "ESSA_GPUS_PER_NODE": "8",
           "ESSA_WARM_START": "0", "ESSA_HOSTFILE": str(tmp_path / "hosts")}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    return env


def _train_script(tmp_path, env, *sets, **extra_env):
    args = ["bash", str(SLURM / "essa-train.sbatch"), str(CONFIGS / "demo-cpu.yaml"),
            "--set", f"output_dir={tmp_path / 'runs'}", "--set", "name=job", *sets]
    return subprocess.run(args, env={**env, **extra_env}, capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def _log(tmp_path, name):
    path = tmp_path / name
    return path.read_text() if path.is_file() else ""


def test_scripts_parse_and_carry_signal_and_requeue_logic():
    for name in ("essa-train.sbatch", "essa-sweep.sbatch", "essa-lib.sh", "rank-gpu.sh"):
        assert subprocess.run(["bash", "-n", str(SLURM / name)]).returncode == 0, name
    for name in ("essa-train.sbatch", "essa-sweep.sbatch"):
        text = (SLURM / name).read_text()
        assert re.search(r"^#SBATCH --signal=B:USR1@\d+$", text, re.M) and "#SBATCH --requeue" in text
    lib = (SLURM / "essa-lib.sh").read_text()
    assert 'scontrol requeue "$SLURM_JOB_ID"' in lib and "trap 'essa_forward USR1' USR1" in lib


@pytest.mark.parametrize("rc, requeued", [(75, True), (0, False), (3, False)])
def test_train_script_requeues_only_on_exit_75(tmp_path, fake_slurm, rc, requeued):
    out = _train_script(tmp_path, fake_slurm, FAKE_RC=str(rc))
    assert out.returncode == rc, out.stderr
    srun = _log(tmp_path, "srun.log")
    # master + 8 workers on the first node, 8 on the second: 17 ranks through rank-gpu.sh
    assert "--mpi=pmix" in srun and "--ntasks=17" in srun and "--distribution=arbitrary" in srun
    assert "rank-gpu.sh essa-train --config" in srun and "--resume" not in srun
    hosts = (tmp_path / "hosts").read_text().split()
    assert hosts[:9] == ["gpu-a"] * 9 and hosts[9:] == ["gpu-b"] * 8
    assert ("requeue 4242" in _log(tmp_path, "scontrol.log")) == requeued


def test_a_master_that_evaluates_takes_a_gpu_slot_instead_of_an_extra_rank(tmp_path, fake_slurm):
    out = _train_script(tmp_path, fake_slurm, "--set", "runtime.master_evaluates=true", FAKE_RC="0")
    assert out.returncode == 0, out.stderr
    assert "--ntasks=16" in _log(tmp_path, "srun.log") and "the master is one of the engines" in out.stderr
    hosts = (tmp_path / "hosts").read_text().split()
    assert hosts == ["gpu-a"] * 8 + ["gpu-b"] * 8


def test_requeued_job_resumes_from_the_checkpoint(tmp_path, fake_slurm):
    ckpt = tmp_path / "runs" / "job" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"generation": 3, "strategy_file": "strategy-3.ckpt"}))
    out = _train_script(tmp_path, fake_slurm, FAKE_RC="0", SLURM_RESTART_COUNT="1")
    assert out.returncode == 0, out.stderr
    assert f"--resume {tmp_path / 'runs' / 'job'}" in _log(tmp_path, "srun.log")
    assert "resuming" in out.stderr and "from generation 3" in out.stderr


def test_usr1_to_the_batch_script_reaches_the_step_and_the_job_is_requeued(tmp_path, fake_slurm):
    args = ["bash", str(SLURM / "essa-train.sbatch"), str(CONFIGS / "demo-cpu.yaml"),
            "--set", f"output_dir={tmp_path / 'runs'}", "--set", "name=job"]
    proc = subprocess.Popen(args, env={**fake_slurm, "FAKE_MODE": "wait"}, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR1)  # what #SBATCH --signal=B:USR1@600 delivers
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert _log(tmp_path, "signals.log").split() == ["USR1"]
    assert "requeue 4242" in _log(tmp_path, "scontrol.log")


def test_sweep_script_runs_the_array_task_cell(tmp_path, fake_slurm):
    path = write_sweep(tmp_path)
    out = subprocess.run(["bash", str(SLURM / "essa-sweep.sbatch"), str(path)],
                         env={**fake_slurm, "FAKE_RC": "75", "SLURM_ARRAY_TASK_ID": "1"},
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 75, out.stderr
    srun = _log(tmp_path, "srun.log")
    assert "--set name=t-c01-r4-pop8" in srun and "--set search.popsize=8" in srun
    assert "requeue 4242" in _log(tmp_path, "scontrol.log")


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURMD_NODENAME": "gpu-a"}, ""),  # master: no GPU
    ({"SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURMD_NODENAME": "gpu-a"}, "0"),
    ({"SLURM_PROCID": "8", "SLURM_LOCALID": "8", "SLURMD_NODENAME": "gpu-a"}, "7"),
    ({"SLURM_PROCID": "9", "SLURM_LOCALID": "0", "SLURMD_NODENAME": "gpu-b"}, "0"),
    ({"SLURM_PROCID": "12", "SLURM_LOCALID": "3", "SLURMD_NODENAME": "gpu-b", "ESSA_TP": "2",
      "CUDA_VISIBLE_DEVICES": "4,5,6,7,0,1,2,3"}, "2,3"),
    # runtime.master_evaluates: the master is an engine too, every rank takes its local slot
    ({"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURMD_NODENAME": "gpu-a",
      "ESSA_MASTER_EVALUATES": "1"}, "0"),
    ({"SLURM_PROCID": "7", "SLURM_LOCALID": "7", "SLURMD_NODENAME": "gpu-a",
      "ESSA_MASTER_EVALUATES": "1"}, "7"),
])
def test_rank_gpu_gives_workers_their_gpus_and_the_master_none(tmp_path, env, expected):
    status = tmp_path / "status"
    full = {"PATH": os.environ["PATH"], "ESSA_GPUS_PER_NODE": "8", "ESSA_MASTER_HOST": "gpu-a",
            "ESSA_STATUS_FILE": str(status), **env}
    out = subprocess.run([str(SLURM / "rank-gpu.sh"), "bash", "-c", 'echo "[$CUDA_VISIBLE_DEVICES]"; exit 5'],
                         env=full, capture_output=True, text=True)
    assert out.returncode == 5 and out.stdout.strip() == f"[{expected}]", out.stderr
    # only the master records its exit status (the batch script requeues on the master's 75)
    assert status.is_file() == (env["SLURM_PROCID"] == "0")


# ---- the summary table -----------------------------------------------------------------------

def _write_run(run_dir: Path, done: bool) -> None:
    """metrics.jsonl (and summary.json) in the format of essa/runtime/loop.py."""
    run_dir.mkdir(parents=True)
    lines = [{"generation": -1, "phase": "validation", "val_accuracy": 0.40, "val_items": 100}]
    for g in range(4 if done else 2):
        lines.append({"generation": g, "phase": "search", "fitness_kind": "accuracy",
                      "fitness_max": 0.5, "wall_time": 10.0 * (g + 1), "tokens": 100})
        if g % 2 == 1:
            lines.append({"generation": g, "phase": "validation", "val_accuracy": 0.45 + 0.05 * (g == 1),
                          "val_items": 100})
    if done:
        lines.append({"generation": 4, "phase": "test", "test_items": 100, "test_accuracy_base": 0.1,
                      "test_accuracy_start": 0.4, "test_accuracy_mean": 0.47})
        (run_dir / "summary.json").write_text(json.dumps(
            {"generations": 4, "best_fitness": 0.5, "wall_time": 40.0,
             "test": {"items": 100, "accuracy": {"base": 0.1, "start": 0.4, "mean": 0.47}}}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_summary_tables_done_partial_and_missing_cells(tmp_path):
    path = write_sweep(tmp_path)
    sweep = load_sweep(path)
    cells = sweep.cells()
    _write_run(tmp_path / "runs" / cells[0].run_name, done=True)
    _write_run(tmp_path / "runs" / cells[1].run_name, done=False)
    rows = sweep_rows(sweep)
    assert [r["status"] for r in rows] == ["done", "partial"] + ["missing"] * 4
    assert rows[0]["val_start"] == 0.40 and rows[0]["val_last"] == 0.45 and rows[0]["val_best"] == 0.50
    assert rows[0]["test_mean"] == 0.47 and rows[0]["generations"] == 4 and rows[0]["wall_time_s"] == 40.0
    assert rows[1]["generations"] == 2 and rows[1]["test_mean"] is None and rows[1]["val_last"] == 0.5
    assert rows[2]["r"] == 4 and rows[2]["pop"] == 10

    md = to_markdown(sweep, rows)
    assert md.splitlines()[0].startswith("| cell | r | pop | status | val_start | val_last | val_best")
    assert "| 0 | 4 | 6 | done | 0.4000 | 0.4500 | 0.5000 | 0.4700 | 4 | 40.0 |" in md
    assert "| 2 | 4 | 10 | missing | - | - | - | - | - | - |" in md and "1 of 6 cells done" in md
    table = list(__import__("csv").DictReader(to_csv(sweep, rows).splitlines()))
    assert len(table) == 6 and table[0]["test_mean"] == "0.47" and table[5]["status"] == "missing"

    out = run_cli(["essa", "sweep", "summary", str(path), "--csv", str(tmp_path / "t.csv")])
    assert out.returncode == 0 and "1 of 6 cells done" in out.stdout
    assert (tmp_path / "t.csv").read_text() == to_csv(sweep, rows)


# ---- the paper configs -----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_dry_run_from_config_json_only(tmp_path, name):
    from essa.config import load_config
    model = tmp_path / "model"
    model.mkdir()
    arch = ARCHITECTURES[PAPER_CONFIGS[name]]
    (model / "config.json").write_text(json.dumps(arch))  # no weights, no tokenizer
    config = load_config(CONFIGS / name)
    sets = ["--set", f"model.path={model}"]
    if config.model.quantized_path:  # the compressed-tensors copy: its config.json says so
        copy = tmp_path / "model-quantized"
        copy.mkdir()
        (copy / "config.json").write_text(json.dumps({**arch, "quantization_config": {
            "quant_method": "compressed-tensors"}}))
        sets += ["--set", f"model.quantized_path={copy}"]
    out = run_cli(["essa-train", "--config", str(CONFIGS / name), *sets, "--dry-run"],
                  env={"ESSA_DATA_DIR": str(tmp_path / "no-data")})  # data not read
    assert out.returncode == 0, out.stderr
    if config.engine.backend == "vllm":
        served = copy if config.model.quantized_path else model
        mode = config.engine.mode if config.engine.mode != "auto" else r"\w+"
        assert re.search(rf"base\s+{served} \(.*{config.model.quantization}.*\).*candidates {mode} mode",
                         out.stdout), out.stdout
    k = math.floor(config.adapter.alpha_frac * config.adapter.rank + 1e-9)
    expected = arch["num_hidden_layers"] * len(config.adapter.target_modules) * 2 * k
    found = re.search(r"search\s+d = (\d+) modules x 2 factors x (\d+) = (\d+)", out.stdout)
    assert found and int(found.group(3)) == expected, out.stdout
    assert int(found.group(1)) == arch["num_hidden_layers"] * 4
    assert config.engine.max_model_len <= arch["max_position_embeddings"]
    assert f"{config.search.popsize} candidates x {config.search.generations} generations" in out.stdout


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_warm_start_fits_one_80gb_gpu(tmp_path, name, capsys, monkeypatch):
    """essa-sft --dry-run of each paper config against an 80 GB GPU: the plan fits (the 32B ones
    through QLoRA), with the trl trainer in bf16 as a CUDA node resolves it."""
    from essa.cli.sft import main
    monkeypatch.setenv("ESSA_DATA_DIR", str(tmp_path / "no-data"))  # data not read
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(ARCHITECTURES[PAPER_CONFIGS[name]]))
    sets = [f"model.path={model}", "sft.device=cuda", "sft.device_memory_gib=80", f"output_dir={tmp_path}"]
    code = main(["--config", str(CONFIGS / name), *[f"--set={s}" for s in sets], "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0, out
    total = float(re.search(r"total .* ([\d.]+) GiB", out).group(1))
    assert 5 < total < 80 and "80.0 GiB (sft.device_memory_gib): fits" in out, out
    assert "SFT trainer trl on cuda (bf16, " in out and "gradient checkpointing" in out, out
    assert "planned: this node has no GPU" in out


def test_paper_configs_name_real_data_and_runnable_engines(tmp_path):
    from essa.config import load_config
    from essa.data.loading import KNOWN_DATASETS, default_data_dir, load_task
    seen = {}
    for name in PAPER_CONFIGS:
        config = load_config(CONFIGS / name)
        seen[name] = config
        assert config.engine.backend in ("vllm", "transformers") and config.engine.memory_fraction >= 0.8
        if config.model.quantization in ("int8", "int4"):  # compressed-tensors copies in vLLM
            assert config.model.quantized_path and config.engine.backend == "vllm", name
        if config.model.quantization != "none" or config.engine.tensor_parallel_size > 1:
            assert config.engine.mode in ("adapter", "auto"), name
        if config.task.dataset in KNOWN_DATASETS:
            assert (default_data_dir() / KNOWN_DATASETS[config.task.dataset].folder / "test.jsonl").is_file()
        else:  # the PRM800K-style MATH folder: train = MATH train, test = MATH500
            assert config.task.dataset == "data/prm800k-math" and config.task.reward == "math", name
    assert {c.model.quantization for c in seen.values()} >= {"int4", "int8", "none"}

    # The MATH configs' task section works on a folder laid out as documented.
    folder = tmp_path / "prm800k-math"
    folder.mkdir()
    shutil.copy(default_data_dir() / "math500" / "test.jsonl", folder / "test.jsonl")
    rows = [{"problem": f"What is {i} + {i}?", "solution": f"$\\boxed{{{2 * i}}}$", "answer": str(2 * i),
             "subject": "Algebra", "level": 1, "unique_id": f"train/{i}.json"} for i in range(50)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task_cfg = seen["qwen2.5-math-7b-math.yaml"].task
    task_cfg.dataset = str(folder)
    task = load_task(task_cfg)
    assert task.reward == "math" and "\\boxed{}" in task.instruction
    assert len(task.split("test")) == 500 and len(task.split("validation")) == 10
    assert task.split("train")[0].answer.isdigit() and "boxed" in task.split("train")[0].solution


def test_missing_model_folder_error_names_the_path_and_what_to_do(tmp_path):
    from essa.models.resolve import resolve_model_path
    with pytest.raises(FileNotFoundError) as err:
        resolve_model_path("models/Qwen2.5-32B")
    msg = str(err.value)
    assert "model folder not found: models/Qwen2.5-32B" in msg
    assert "hf download" in msg and "--set model.path=" in msg
