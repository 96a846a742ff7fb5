r"""One device check of the project's training and search paths on a model built on the spot (#23).

No checkpoint travels to a GPU machine, so the script makes its own: a random Llama (about 0.5B
parameters with ``--device cuda``: Qwen2.5-0.5B's depth, 24 layers, hidden 1152, MLP 4608, 18 / 6
heads; a few hundred thousand with ``--device cpu``) and a byte-level BPE tokenizer with a ChatML
chat template, trained on the arithmetic task's questions (``hf_engine_gpu.build_tiny_model``).
The task is the built-in, generated arithmetic task, so no data file travels either. Checks, each
in its own child process, timed, its failure caught (one failing check does not stop the others):

1. ``sft_bf16``: 20 steps of ``essa.sft.train.train_sft`` with ``sft.trainer=trl`` and
   ``sft.precision`` bf16 (cuda) / float32 (cpu). Pass: the loss falls (mean of the last 5 steps
   below the mean of the first 5) and the folder holds adapter_config.json and
   adapter_model.safetensors. Records training tokens/s (all tokens of the sequences forwarded,
   ``SFTResult.train_tokens``, over the wall time of TRL's ``SFTTrainer.train``, timed here; over
   ``SFTResult.seconds``, loading and saving included, as ``tokens_per_s_end_to_end``) against the
   base model's forward-only tokens/s (``torch.no_grad``, the SFT's dtype) on the same batches, and
   the peak memory (CUDA: ``SFTResult.peak_memory_bytes``; CPU: the check process's ru_maxrss).
2. ``sft_qlora``: 10 steps with ``sft.quantization=nf4`` (QLoRA, bitsandbytes). Same pass rule;
   peak memory against sft_bf16's. Skipped (with the reason) where bitsandbytes does not import or
   its 4-bit kernels do not run on the device.
3. ``grpo``: 5 steps of ``essa.baselines.grpo.run_grpo`` with the arithmetic reward. Pass:
   summary.json says 5 steps and adapter_final loads with peft onto the base model.
4. ``essa_none``, ``essa_int8``, ``essa_int4``: 2 ESSA generations under ``mpirun -n 2`` (master +
   1 worker, ``python -m essa.cli.train``) with ``engine.backend=transformers`` and
   ``model.quantization`` none (bf16 on cuda, auto on cpu), int8 and int4 (nf4). Pass: exit 0 and 2
   search generations in metrics.jsonl. int8/int4 are skipped only where bitsandbytes does not
   import or refuses the device (``essa.doctor_probes.probe_bitsandbytes``).
5. ``engine_vs_peft``: one candidate scored by the transformers engine in a batch with other
   candidates against peft alone (``hf_engine_gpu.scores_vs_peft``): fp32 on cpu, bf16 and fp32 on
   cuda.

Writes one JSON (per check: status pass/fail/skipped, reason, seconds, tokens/s where relevant,
peak memory; device facts, date, total seconds) and prints a table. Exit 1 when a check failed
(skipped is not failed), 2 on a usage error.

CPU (repo root; about a minute on 2 cores):

    PYTHONPATH=. .venv/bin/python benchmarks/gpu_check.py --device cpu --json /tmp/gpu-check-cpu.json

GPU machine (one H200; the whole run is planned to fit 8 minutes: ``--budget-s 450`` by default).
Its image (Python 3.12, torch 2.11+cu130, transformers, peft, accelerate, psutil) lacks trl,
datasets, bitsandbytes, cma, math-verify and MPICH: carry them (/work/.library/device/README.md).
Here, once, in the repo root (the versions of .venv; bitsandbytes unpacked with only its CPU and
CUDA 13.0 libraries, the whole wheel is over the 64 MiB a call may carry):

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .whl trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 cma==4.5.0 \
        math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2 \
        transformers==5.19.0 peft==0.21.2 bitsandbytes==0.50.2 mpich==5.0.2 mpi4py==4.1.2
    mkdir -p .whl/py && unzip -q -o .whl/bitsandbytes-*.whl -d .whl/py && rm .whl/bitsandbytes-*.whl
    find .whl/py/bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*_cpu.so' ! -name '*_cuda130.so' -delete

then the device command (``run`` with ``carry: [".whl"]`` and ``timeout_s: 540``; MPICH and
mpi4py go to a prefix of their own: ``pip --target`` would drop MPICH's lib/libmpi.so.12):

    W="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir"; \
    $W --target /tmp/site $(ls .whl/*.whl | grep -v -e /mpich- -e /mpi4py-) && \
    $W --prefix /tmp/mpich .whl/mpich-*.whl .whl/mpi4py-*.whl || exit; \
    export PYTHONPATH=/tmp/site:$PWD/.whl/py:/tmp/mpich/lib/python3.12/site-packages:$PWD \
        PATH=/tmp/mpich/bin:$PATH LD_LIBRARY_PATH=/tmp/mpich/lib:$LD_LIBRARY_PATH PYTHONUNBUFFERED=1; \
    python3 benchmarks/gpu_check.py --device cuda --json $OUT/gpu-check.json

mpirun is looked for on PATH, beside the interpreter and near every sys.path entry; ``--mpirun``
names it. The cuda mode and this recipe were written without a GPU or network at hand
(2026-11-29): only ``--device cpu`` has been run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

CHECKS = ("sft_bf16", "sft_qlora", "grpo", "essa_none", "essa_int8", "essa_int4", "engine_vs_peft")
# Model shapes: cuda about 0.47B parameters (24 layers like Qwen2.5-0.5B), cpu about 0.26M.
SIZES = {"cuda": dict(hidden=1152, intermediate=4608, layers=24, heads=18, kv_heads=6, vocab=2048),
         "cpu": dict(hidden=64, intermediate=192, layers=4, heads=4, kv_heads=2, vocab=512)}
# Seconds a check may take (each also bounded by what is left of --budget-s).
TIMEOUTS = {"sft_bf16": 150, "sft_qlora": 150, "grpo": 180, "essa_none": 180, "essa_int8": 180,
            "essa_int4": 180, "engine_vs_peft": 120}
SFT_STEPS = {"sft_bf16": 20, "sft_qlora": 10}


# ---- shared pieces ---------------------------------------------------------------------------------


def run_overrides(ctx, name: str) -> list[str]:
    """``--set`` overrides every check shares: the built model, small arithmetic splits, a small
    adapter, few tokens, the check's own output folder."""
    cuda = ctx.device == "cuda"
    return [f"model.path={ctx.model_dir}", f"output_dir={Path(ctx.work) / name}", f"name={name}",
            "task.arithmetic.train_size=256" if cuda else "task.arithmetic.train_size=64",
            "task.arithmetic.validation_size=8", "task.arithmetic.test_size=8",
            f"adapter.rank={8 if cuda else 4}", "adapter.target_modules=[q_proj,k_proj,v_proj,o_proj]",
            f"engine.max_tokens={24 if cuda else 8}", "runtime.eval_items=4", "runtime.test_items=4",
            "seed=0"]


def make_config(ctx, name: str, extra: list[str]):
    """A RunConfig through the project's loader, as ``--set`` overrides (later ones win)."""
    from essa.config import load_config
    return load_config(None, run_overrides(ctx, name) + extra)


def peak_memory_mib(device: str) -> float | None:
    """Peak CUDA memory allocated by this process, or its peak resident set on the CPU (MiB)."""
    import torch
    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def sync(device: str) -> None:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def bnb_refusal(device: str) -> str:
    """Why bitsandbytes cannot run here ('' when its nf4 and INT8 kernels run on ``device``)."""
    from essa.doctor_probes import guarded, probe_bitsandbytes
    facts = guarded(probe_bitsandbytes)
    if "error" in facts:
        return f"bitsandbytes fails on {device}: {facts['error']}"
    if not facts.get("installed"):
        return facts.get("reason") or "bitsandbytes is not installed"
    if not facts.get("works"):
        return facts.get("reason") or f"bitsandbytes kernels do not work on {device}"
    return ""


def mean(values) -> float:
    values = list(values)
    return sum(values) / max(len(values), 1)


# ---- the model -------------------------------------------------------------------------------------


def build_model(folder: Path, device: str) -> dict:
    """The random Llama and its tokenizer (trained on the arithmetic questions) in ``folder``."""
    from essa.config import TaskConfig
    from essa.data import load_task
    from hf_engine_gpu import build_tiny_model
    size = SIZES[device]
    task = load_task(TaskConfig())  # the default arithmetic task: the splits the checks use
    train = task.split("train")[:2000]
    corpus = [f"{e.question}\n{task.instruction}\n{e.solution or e.answer}" for e in train]
    build_tiny_model(folder, SimpleNamespace(**size), seed=0, corpus=corpus, vocab_size=size["vocab"],
                     chat=True)
    config = json.loads((folder / "config.json").read_text())
    from safetensors import safe_open
    params = 0
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            params += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return {"architecture": config["architectures"][0], "parameters": params,
            "hidden": size["hidden"], "layers": size["layers"], "vocab": config["vocab_size"]}


# ---- the checks (each runs in a child process) ----------------------------------------------------


def check_sft(ctx, name: str) -> dict:
    """sft_bf16 / sft_qlora: the project's SFT with the trl trainer; losses, files, speed, memory."""
    import torch
    from essa.sft.train import train_sft
    cuda = ctx.device == "cuda"
    qlora = name == "sft_qlora"
    if qlora:
        why = bnb_refusal(ctx.device)
        if why:
            return {"status": "skipped", "reason": why}
    steps = SFT_STEPS[name]
    extra = [f"sft.steps={steps}", f"sft.batch_size={8 if cuda else 4}", "sft.warmup_steps=2",
             "sft.learning_rate=3e-3", "sft.eval_examples=0", "sft.trainer=trl",
             f"sft.precision={'bf16' if cuda else 'float32'}", f"sft.device={ctx.device}",
             f"sft.quantization={'nf4' if qlora else 'none'}"]
    if not cuda:
        extra.append("sft.threads=2")
    config = make_config(ctx, name, extra)
    out = Path(ctx.work) / name / "adapter"
    loop_seconds = time_trl_training(ctx.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train_sft(config, out, progress=False)
    peak_bytes = result.peak_memory_bytes  # CUDA peak of the training alone; None on the CPU
    peak = round(peak_bytes / 2**20, 1) if peak_bytes else peak_memory_mib(ctx.device)
    losses = [float(x) for x in result.losses]
    k = min(5, len(losses) // 2) or 1
    first, last = mean(losses[:k]), mean(losses[-k:])
    files = {f: (out / f).is_file() for f in ("adapter_config.json", "adapter_model.safetensors")}
    row = {"setup": result.setup, "trainer": result.trainer,
           "steps": result.steps, "losses": [round(x, 5) for x in losses],
           "loss_first_mean": round(first, 5), "loss_last_mean": round(last, 5), "files": files,
           "peak_memory_mib": peak, "peak_memory_source": "SFTResult.peak_memory_bytes" if peak_bytes
           else ("torch.cuda.max_memory_allocated" if cuda else "ru_maxrss of the check's process"),
           "sft_seconds": result.seconds, "target_tokens": result.target_tokens,
           "train_tokens": result.train_tokens}
    # tokens/s of the training loop alone (SFTTrainer.train, timed here) when the trl trainer ran;
    # end to end (SFTResult.seconds: loading, tokenizing, training, saving) beside it
    row["tokens_per_s_end_to_end"] = round(row["train_tokens"] / max(result.seconds, 1e-9), 1)
    if loop_seconds:
        row["train_loop_seconds"] = round(loop_seconds[-1], 3)
        row["tokens_per_s"] = round(row["train_tokens"] / max(loop_seconds[-1], 1e-9), 1)
    else:
        row["tokens_per_s"] = row["tokens_per_s_end_to_end"]
    if not qlora:
        row.update(forward_only(config, sft_batches(config), ctx.device))
        row["train_vs_forward"] = round(row["tokens_per_s"] / max(row["forward_tokens_per_s"], 1e-9), 4)
    problems = []
    if not all(math.isfinite(x) for x in losses) or len(losses) != steps:
        problems.append(f"{len(losses)} losses for {steps} steps, finite: {all(map(math.isfinite, losses))}")
    if not last < first:
        problems.append(f"loss did not fall: first {k} mean {first:.4f}, last {k} mean {last:.4f}")
    if not all(files.values()):
        problems.append(f"adapter folder {out} lacks {[f for f, ok in files.items() if not ok]}")
    if row["trainer"] not in (None, "trl"):
        problems.append(f"sft.trainer=trl ran the {row['trainer']!r} trainer")
    return {"status": "fail" if problems else "pass", "reason": "; ".join(problems), **row}


def time_trl_training(device: str) -> list[float]:
    """Wrap TRL's ``SFTTrainer.train`` in this process so each call's wall seconds (synchronised on
    CUDA) are appended to the returned list; empty when trl does not import."""
    try:
        import trl
    except Exception:  # noqa: BLE001 - no trl: the SFT itself will say so
        return []
    seconds: list[float] = []
    original = trl.SFTTrainer.train

    def timed_train(self, *args, **kwargs):
        sync(device)
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            sync(device)
            seconds.append(time.perf_counter() - t0)

    trl.SFTTrainer.train = timed_train
    return seconds


def sft_batches(config) -> list[dict]:
    """The training batches of ``config`` as both SFT trainers draw them (collated tensors)."""
    from transformers import AutoTokenizer
    from essa.data import load_task
    from essa.models import resolve_model_path
    from essa.sft.data import batch_indices, collate, tokenize_examples
    from essa.sft.train import sft_task_config
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(config.model.path)))
    task = load_task(sft_task_config(config))
    examples = task.split(config.task.train_split)[: config.sft.max_examples]
    data = tokenize_examples(tokenizer, examples, task.instruction, config.model.chat_template,
                             config.sft.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return [collate([data[i] for i in idx], pad)
            for idx in batch_indices(len(data), config.sft.steps, config.sft.batch_size, config.seed)]


def forward_only(config, batches: list, device: str) -> dict:
    """Forward-only tokens/s of the base model (the SFT's dtype: bf16 on cuda, float32 on cpu) over
    ``batches``, after one warm-up forward."""
    import torch
    from transformers import AutoModelForCausalLM
    from essa.models import resolve_model_path
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(resolve_model_path(config.model.path)), dtype=dtype)
    model.to(device).eval()
    moved = [{k: b[k].to(device) for k in ("input_ids", "attention_mask")} for b in batches]
    with torch.no_grad():
        model(**moved[0])
        sync(device)
        t0 = time.perf_counter()
        for b in moved:
            model(**b)
        sync(device)
    seconds = time.perf_counter() - t0
    tokens = int(sum(int(b["attention_mask"].sum()) for b in moved))
    padded = int(sum(b["input_ids"].numel() for b in moved))
    return {"forward_seconds": round(seconds, 3), "forward_tokens": tokens, "forward_padded_tokens": padded,
            "forward_tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}


def check_grpo(ctx, name: str) -> dict:
    """5 GRPO steps with the arithmetic reward; summary.json and a loadable adapter_final."""
    import torch
    from essa.baselines.grpo import run_grpo
    from essa.rundir import create_run_dir, setup_logging
    cuda = ctx.device == "cuda"
    extra = ["adapter.init=fresh", "grpo.steps=5", "grpo.prompts_per_step=2",
             f"grpo.num_generations={4 if cuda else 2}", "grpo.learning_rate=1e-3", "grpo.eval_every=0",
             "grpo.generation=transformers", f"grpo.device={ctx.device}"]
    if not cuda:
        extra.append("grpo.threads=2")
    config = make_config(ctx, name, extra)
    run_dir = create_run_dir(config)
    setup_logging(run_dir)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    summary = run_grpo(config, run_dir)
    seconds = time.perf_counter() - t0
    peak = peak_memory_mib(ctx.device)
    written = json.loads((run_dir / "summary.json").read_text())
    row = {"steps": written.get("steps"), "tokens": written.get("tokens"),
           "train_wall_time": written.get("wall_time"), "peak_memory_mib": peak,
           "run_seconds": round(seconds, 2), "tokens_per_s":
           round(written["tokens"] / written["wall_time"], 1) if written.get("wall_time") else None}
    problems = [] if written.get("steps") == 5 else [f"summary.json says {written.get('steps')} steps, not 5"]
    if summary.get("steps") != written.get("steps"):
        problems.append("run_grpo's return value and summary.json disagree")
    final = run_dir / "adapter_final"
    try:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained(ctx.model_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(final))
        row["adapter_final_lora_tensors"] = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
        if not row["adapter_final_lora_tensors"]:
            problems.append(f"{final} loads without LoRA tensors")
    except Exception as err:  # noqa: BLE001 - any load failure is this check's failure
        problems.append(f"adapter_final does not load: {type(err).__name__}: {err}")
    return {"status": "fail" if problems else "pass", "reason": "; ".join(problems), **row}


def check_engine_vs_peft(ctx, name: str) -> dict:
    """A candidate scored in a batch of three by the transformers engine against peft alone."""
    import torch
    from essa.config import EngineConfig, ModelConfig
    from essa.engines.hf_engine import TransformersEngine
    from hf_engine_gpu import CONTINUATIONS, PEFT_TOLERANCE, PROMPTS, random_candidate, scores_vs_peft
    modes = {"fp32": "float32", "bf16": "bfloat16"}
    row, problems = {"modes": {}}, []
    for mode in (["bf16", "fp32"] if ctx.device == "cuda" else ["fp32"]):
        engine = TransformersEngine(ctx.model_dir, ModelConfig(path=ctx.model_dir, dtype=modes[mode]),
                                    EngineConfig(max_model_len=1024), device=ctx.device)
        cands = [random_candidate(engine.model, 8, 0.6 + 0.1 * k, 100 + k, f"c{k}") for k in range(2)]
        diff = scores_vs_peft(engine, [cands[0], cands[1], None], PROMPTS, CONTINUATIONS,
                              PEFT_TOLERANCE[mode])
        # the candidate must matter: its scores differ from the base model's
        base = engine.score_continuations(PROMPTS, CONTINUATIONS, [None, cands[0]])
        diff["differs_from_base"] = any(abs(a.logprob - b.logprob) > 1e-3 for a, b in zip(*base))
        row["modes"][mode] = diff
        if not diff["ok"]:
            problems.append(f"{mode}: engine and peft differ by {diff['max_diff_per_token']} per token "
                            f"(allowed {PEFT_TOLERANCE[mode]})")
        if not diff["differs_from_base"]:
            problems.append(f"{mode}: the candidate scores as the base model (LoRA not applied)")
        engine.close()
        if ctx.device == "cuda":
            torch.cuda.empty_cache()
    row["peak_memory_mib"] = peak_memory_mib(ctx.device)
    return {"status": "fail" if problems else "pass", "reason": "; ".join(problems), **row}


CHILD_CHECKS = {"sft_bf16": check_sft, "sft_qlora": check_sft, "grpo": check_grpo,
                "engine_vs_peft": check_engine_vs_peft}


def child_main(name: str, context: Path, result: Path) -> int:
    """Run one check in this process; write its row to ``result`` (a raised error is a fail)."""
    import warnings
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    ctx = SimpleNamespace(**json.loads(context.read_text()))
    try:
        row = CHILD_CHECKS[name](ctx, name)
    except Exception as err:  # noqa: BLE001 - reported as the check's failure
        import traceback
        traceback.print_exc()
        row = {"status": "fail", "reason": f"raised {type(err).__name__}: {err}"}
    result.write_text(json.dumps(row, default=str))
    return 0


# ---- the parent: run every check, collect, report --------------------------------------------------


def find_mpirun(given: str) -> str | None:
    """``--mpirun``, else the mpirun beside this interpreter (a venv's MPICH wheel), on PATH, or near
    a sys.path entry."""
    if given:
        return given
    candidates = [str(Path(sys.executable).parent / "mpirun"), shutil.which("mpirun"),
                  shutil.which("mpiexec")]
    for entry in (Path(p) for p in sys.path if p):  # <target>/bin; <prefix>/bin of <prefix>/lib/pythonX/site-packages
        candidates += [str(entry / "bin" / "mpirun")] + ([str(entry.parents[2] / "bin" / "mpirun")]
                                                         if len(entry.parents) > 2 else [])
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


def child_env() -> dict:
    """This environment with the repo root first on PYTHONPATH (essa need not be installed)."""
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 onward of /proc/<pid>/stat (after the command name), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(root: int) -> dict[int, tuple[int, str]]:
    """{pid: (resident bytes, start time)} of ``root`` and every process below it (parent links in
    /proc): MPICH's launcher gives each rank a session of its own, so a process group misses them."""
    page, stats = os.sysconf("SC_PAGE_SIZE"), {}
    for entry in os.listdir("/proc"):
        fields = _proc_stat(int(entry)) if entry.isdigit() else None
        if fields:  # fields 4 (ppid), 22 (start time), 24 (rss, pages)
            stats[int(entry)] = (int(fields[1]), int(fields[21]) * page, fields[19])
    tree, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in stats and pid not in tree:
            tree[pid] = stats[pid][1:]
            frontier += [child for child, (parent, *_) in stats.items() if parent == pid]
    return tree


class MemorySampler:
    """Peak memory of a process and everything it started, sampled every ``interval`` seconds: on
    cuda the device's memory in use (all processes) above its level at the start; on the CPU the
    summed resident sets of the process tree."""

    def __init__(self, root: int, device: str, interval: float = 0.5):
        import threading
        self.root, self.device, self.interval = root, device, interval
        self.peak_mib = 0.0
        self.baseline = self._device_used() if device == "cuda" else 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _device_used() -> float:
        import torch
        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**20

    def _run(self) -> None:
        while True:
            try:
                tree = process_tree(self.root)
                used = (self._device_used() - self.baseline if self.device == "cuda"
                        else sum(rss for rss, _ in tree.values()) / 2**20)
                self.peak_mib = max(self.peak_mib, used)
            except Exception:  # noqa: BLE001 - a failed sample is skipped
                pass
            if self._stop.wait(self.interval):
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak_mib, 1)


def stop_tree(proc: subprocess.Popen) -> None:
    """End a command that ran out of time: SIGTERM (mpirun passes it to its ranks), then SIGKILL to
    what is left of the processes it started, by id (each checked against its start time)."""
    tree = process_tree(proc.pid)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for pid, (_, started) in tree.items():
        fields = _proc_stat(pid)
        if fields and fields[19] == started:  # the same process, not a reused id
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    proc.wait()


def run_process(cmd: list[str], log: Path, timeout: float, device: str) -> tuple[int | None, str, float]:
    """Run ``cmd``, output to ``log``; (exit code or None on timeout, the log's tail, the peak memory
    of it and its children in MiB: see MemorySampler)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        sampler = MemorySampler(proc.pid, device)
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            stop_tree(proc)
            code = None
        finally:
            peak = sampler.stop()
    tail = log.read_text(errors="replace")[-2500:]
    return code, tail, peak


SAMPLED = {"cuda": "sampled: device memory in use above the level before the check (all processes)",
           "cpu": "sampled: summed resident sets of mpirun and the processes it started"}


def run_child_check(name: str, ctx_file: Path, work: Path, timeout: float, device: str) -> dict:
    result = work / f"{name}.result.json"
    code, tail, peak = run_process([sys.executable, str(Path(__file__).resolve()), "--child", name,
                                    "--context", str(ctx_file), "--result", str(result)],
                                   work / f"{name}.log", timeout, device)
    if result.is_file():
        row = json.loads(result.read_text())
        row["sampled_peak_memory_mib"] = peak
        return row
    why = f"timed out after {timeout:.0f} s" if code is None else f"child exited {code} without a result"
    return {"status": "fail", "reason": f"{why}; log tail: {tail[-1200:]}"}


def run_essa(name: str, ctx, work: Path, timeout: float, mpirun: str | None) -> dict:
    """2 ESSA generations under ``mpirun -n 2`` with the transformers engine."""
    quant = name.split("_", 1)[1]
    if quant != "none" and ctx.bnb_refusal:
        return {"status": "skipped", "reason": ctx.bnb_refusal}
    if mpirun is None:
        return {"status": "fail", "reason": "no mpirun found (PATH, beside the interpreter, <sys.path>/bin); "
                "pass --mpirun"}
    cuda = ctx.device == "cuda"
    sets = run_overrides(ctx, name) + [
        "adapter.init=fresh", "engine.backend=transformers", f"model.quantization={quant}",
        f"model.dtype={'bfloat16' if cuda else 'auto'}", "search.popsize=4", "search.generations=2",
        "search.sigma0=0.1", "fitness.prompts_per_candidate=4", "runtime.eval_every=2",
        "runtime.cpu_bind=nobind"]
    cmd = [mpirun, "-n", "2", sys.executable, "-m", "essa.cli.train",
           *[a for s in sets for a in ("--set", s)]]
    code, tail, peak = run_process(cmd, work / f"{name}.log", timeout, ctx.device)
    run_dir = Path(ctx.work) / name / name
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    records = [json.loads(x) for x in lines if x.strip()]
    search = [r for r in records if r.get("phase") == "search"]
    tokens, seconds = sum(r.get("tokens", 0) for r in search), sum(r.get("gen_seconds", 0) for r in search)
    row = {"exit_code": code, "generations": [r["generation"] for r in search], "search_tokens": tokens,
           "search_seconds": round(seconds, 3),
           "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
           "fitness_max": [r.get("fitness_max") for r in search],
           "peak_memory_mib": peak, "peak_memory_source": SAMPLED[ctx.device]}
    summary = run_dir / "summary.json"
    if summary.is_file():
        engines = json.loads(summary.read_text()).get("engines", {})
        row["engine"] = engines.get("1")
    problems = []
    if code != 0:
        problems.append("timed out" if code is None else f"exit {code}")
    if row["generations"] != [0, 1]:
        problems.append(f"metrics.jsonl has search generations {row['generations']}, not [0, 1]")
    if quant != "none" and row.get("engine") and quant not in row["engine"]:
        problems.append(f"the worker's engine is {row['engine']!r}, not {quant}")
    if problems:
        problems.append(f"log tail: {tail[-1200:]}")
    return {"status": "fail" if problems else "pass", "reason": "; ".join(problems), **row}


def device_facts(device: str, mpirun: str | None) -> dict:
    import torch
    from essa.doctor_probes import dist_version, guarded, probe_cpu, probe_gpus
    facts = {"device": device, "torch": torch.__version__, "cuda_build": torch.version.cuda,
             "python": sys.version.split()[0], "cpu": guarded(probe_cpu), "mpirun": mpirun,
             "libraries": {n: dist_version(n) for n in ("transformers", "peft", "accelerate", "trl",
                                                        "datasets", "bitsandbytes", "mpi4py", "mpich")}}
    if device == "cuda":
        facts["gpus"] = guarded(probe_gpus)
    return facts


def print_table(rows: dict, total: float) -> None:
    print("\n| check | status | seconds | tokens/s | peak MiB | notes |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        notes = r.get("reason", "")
        if name == "sft_bf16" and "forward_tokens_per_s" in r:
            notes = (f"forward-only {r['forward_tokens_per_s']} tok/s (train loop/forward "
                     f"{r.get('train_vs_forward')}); loss {r.get('loss_first_mean')} -> "
                     f"{r.get('loss_last_mean')}" + (f"; {notes}" if notes else ""))
        elif name == "sft_qlora" and r.get("peak_vs_bf16") is not None:
            notes = f"peak / bf16 peak {r['peak_vs_bf16']}" + (f"; {notes}" if notes else "")
        notes = notes.replace("\n", " ").replace("|", "/")
        if len(notes) > 160:
            notes = notes[:157] + "..."
        print(f"| {name} | {r['status']} | {r.get('seconds')} | {r.get('tokens_per_s', '-')} "
              f"| {r.get('peak_memory_mib', '-')} | {notes} |")
    failed = [n for n, r in rows.items() if r["status"] == "fail"]
    print(f"\ntotal {total:.1f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "no check failed"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--json", default="", help="where the results go (cuda default: "
                        "benchmarks/results/gpu-check-<date>.json; cpu: a temp folder)")
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help="comma-separated subset of " + ",".join(CHECKS))
    parser.add_argument("--budget-s", type=float, default=450.0, help="whole-run limit in seconds")
    parser.add_argument("--mpirun", default="", help="the mpirun to start ESSA runs with")
    parser.add_argument("--work", default="", help="working folder (default: a temp folder, removed)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--context", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child, Path(args.context), Path(args.result))
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    import torch
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no GPU (use --device cpu)", file=sys.stderr)
        return 2
    date = dt.datetime.now().strftime("%Y-%m-%d")
    out = Path(args.json) if args.json else (
        HERE / "results" / f"gpu-check-{date}.json" if args.device == "cuda"
        else Path(tempfile.mkdtemp(prefix="gpu-check-")) / "gpu-check-cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    mpirun = find_mpirun(args.mpirun)
    report = {"date": dt.datetime.now().isoformat(timespec="seconds"),
              "facts": device_facts(args.device, mpirun), "checks": {}}
    print(f"gpu_check on {args.device}: torch {torch.__version__}; results -> {out}", flush=True)
    keep = bool(args.work)
    work = Path(args.work) if keep else Path(tempfile.mkdtemp(prefix="gpu-check-work-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        model_dir = work / "model"
        try:
            report["model"] = build_model(model_dir, args.device)
        except Exception as err:  # noqa: BLE001 - nothing can run without the model: all fail
            import traceback
            traceback.print_exc()
            report["model"] = {"error": f"{type(err).__name__}: {err}"}
            checks_failed = {"status": "fail", "reason": f"model build failed: {report['model']['error']}"}
            report["checks"] = {name: {**checks_failed, "seconds": 0.0} for name in checks}
            checks = []
        report["model"]["build_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"model: {report['model']}", flush=True)
        needs_bnb = any(c in ("sft_qlora", "essa_int8", "essa_int4") for c in checks)
        refusal = bnb_refusal(args.device) if needs_bnb else ""
        ctx = SimpleNamespace(model_dir=str(model_dir), work=str(work), device=args.device,
                              bnb_refusal=refusal)
        ctx_file = work / "context.json"
        ctx_file.write_text(json.dumps(vars(ctx)))
        for name in checks:
            left = args.budget_s - (time.perf_counter() - t_start)
            if left < 15:
                row = {"status": "fail", "reason": f"not run: --budget-s {args.budget_s:g} used up"}
            else:
                timeout = min(TIMEOUTS[name], left)
                t0 = time.perf_counter()
                try:
                    if name.startswith("essa_"):
                        row = run_essa(name, ctx, work, timeout, mpirun)
                    else:
                        row = run_child_check(name, ctx_file, work, timeout, args.device)
                except Exception as err:  # noqa: BLE001 - one check's failure never stops the others
                    row = {"status": "fail", "reason": f"raised {type(err).__name__}: {err}"}
                row["seconds"] = round(time.perf_counter() - t0, 1)
            if row["status"] == "skipped" and not row.get("reason"):
                row["reason"] = "skipped without a reason"
            report["checks"][name] = row
            if name == "sft_qlora":
                add_qlora_ratio(report["checks"])
            print(f"{name}: {row['status']} ({row.get('seconds')} s) {row.get('reason', '')[:300]}",
                  flush=True)
            report["total_seconds"] = round(time.perf_counter() - t_start, 1)
            out.write_text(json.dumps(report, indent=1, default=str))  # partial results too
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    out.write_text(json.dumps(report, indent=1, default=str))
    print_table(report["checks"], report["total_seconds"])
    print(f"results: {out}")
    return 1 if any(r["status"] == "fail" for r in report["checks"].values()) else 0


def add_qlora_ratio(rows: dict) -> None:
    """sft_qlora's peak memory over sft_bf16's (both measured the same way on the device)."""
    q, b = rows.get("sft_qlora", {}), rows.get("sft_bf16", {})
    if q.get("peak_memory_mib") and b.get("peak_memory_mib"):
        q["bf16_peak_memory_mib"] = b["peak_memory_mib"]
        q["peak_vs_bf16"] = round(q["peak_memory_mib"] / b["peak_memory_mib"], 3)


if __name__ == "__main__":
    sys.exit(main())
