"""``essa doctor``: what this node has, and which engines, modes, dtypes and quantizations will work.

    python -m essa.doctor            # the report as aligned text
    python -m essa.doctor --json     # the same facts as JSON (for scripts and bug reports)
    python -m essa.doctor --strict   # exit 1 when torch or a supported vLLM is missing

Run it on every new kind of node (a GPU partition, a login node, a laptop) before the first job:
torch and its CUDA, the GPUs, the CPU's bf16, vLLM (CPU or CUDA build, inside the range essa
supports), bitsandbytes, flash-attn, MPI, the Python libraries, the quantize venv and NLTK's
tables. Every missing piece and every "no" carries a one-line reason. The probes live in
:mod:`essa.doctor_probes`; this module turns their facts into verdicts and prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass

from essa.doctor_probes import collect, guarded


@dataclass(frozen=True)
class Row:
    """One line of the report."""

    name: str
    status: str  # "ok", "no", "info" or "fail" (a probe or verdict that raised)
    value: str = ""
    reason: str = ""


def _facts(facts: dict, name: str) -> dict:
    """A probe's facts, or {} when it failed or did not run (its own row says so)."""
    found = facts.get(name)
    return found if isinstance(found, dict) and "error" not in found else {}


def _yes(ok: bool) -> str:
    return "ok" if ok else "no"


# -- what the node has ------------------------------------------------------------------------

def python_rows(f: dict) -> list[Row]:
    return [Row("Python", "info", f"{f['version']} ({f['executable']}, {f['platform']})"),
            Row("essa", "info" if f["essa"] else "no", f["essa"] or "", "" if f["essa"] else
                "essa is not installed in this interpreter (pip install -e .)")]


def torch_rows(f: dict) -> list[Row]:
    if not f["installed"]:
        return [Row("torch", "no", reason=f["reason"])]
    return [Row("torch", "ok", f"{f['version']}, CUDA build {f['cuda_build'] or 'none'}"),
            Row("CUDA", _yes(f["cuda_available"]), "available" if f["cuda_available"] else "", f["reason"])]


def gpu_rows(gpus: list, facts: dict) -> list[Row]:
    if not gpus:  # why: the torch probe knows (CPU-only build, no driver, CUDA_VISIBLE_DEVICES)
        why = _facts(facts, "torch").get("reason") or "torch is missing or its probe failed"
        return [Row("GPUs", "no", "none", why)]
    return [Row(f"GPU {g['index']}", "ok", f"{g['name']}, {g['memory_gib']} GiB, compute capability "
                f"{g['capability']}, bf16 {'yes' if g['bf16'] else 'no'}") for g in gpus]


def cpu_rows(f: dict) -> list[Row]:
    kernels = f", PyTorch capability {f['capability']}" if f["capability"] else ""
    cpu = Row("CPU", "info", f"{f['name']}, {f['cores']} cores{kernels}")
    if f["bf16_native"] is None:  # no torch to ask
        return [cpu, Row("CPU bf16", "no", "unknown", f["reason"])]
    return [cpu, Row("CPU bf16", _yes(f["bf16_native"]), "native" if f["bf16_native"] else "emulated",
                     f["reason"])]


def vllm_rows(f: dict) -> list[Row]:
    if not f["installed"] or not f.get("in_range"):
        return [Row("vLLM", "no", f.get("version", ""), f["reason"])]
    build = {"cpu": "CPU build", "cuda": "CUDA build"}.get(f["build"], f["build"])
    return [Row("vLLM", "ok" if not f["reason"] else "no",
                f"{f['version']} ({f['dist']}), {build}, supported {f['supported']}", f["reason"])]


def package_rows(label: str, f: dict) -> list[Row]:
    ok = f["installed"] and f.get("works", True)
    where = f" on {f['device']}" if "device" in f else ""
    return [Row(label, _yes(ok), f"{f['version']}{where}" if f["installed"] else "", f["reason"])]


def mpi_rows(f: dict) -> list[Row]:
    rows = [Row("mpi4py", _yes(bool(f["mpi4py"])), f["mpi4py"] or "", "" if f["mpi4py"] else f["reason"])]
    if f["mpi4py"]:
        rows.append(Row("MPI library", "info", f["library"]))
    rows.append(Row("mpirun", _yes(bool(f["mpirun"])), f["mpirun"] or "", "" if f["mpirun"] else
                    "no mpirun/mpiexec on PATH: use srun, or install MPI (docs/cluster.md)"))
    return rows


def library_rows(f: dict) -> list[Row]:
    return [Row(name, _yes(bool(v)), v or "", "" if v else "not installed") for name, v in f.items()]


def quantize_rows(f: dict) -> list[Row]:
    found = f"llmcompressor {f['llmcompressor']} ({f['python']})" if f["llmcompressor"] else ""
    return [Row("quantize venv", _yes(bool(found)), found, f["reason"])]


def nltk_rows(f: dict) -> list[Row]:
    return [Row("NLTK punkt_tab", _yes(bool(f["punkt_tab"])), f["punkt_tab"] or "", f["reason"])]


FORMATS = {"python": python_rows, "torch": torch_rows, "gpus": gpu_rows, "cpu": cpu_rows,
           "vllm": vllm_rows, "bitsandbytes": lambda f: package_rows("bitsandbytes", f),
           "flash_attn": lambda f: package_rows("flash-attn", f), "mpi": mpi_rows,
           "libraries": library_rows, "quantize_venv": quantize_rows, "nltk": nltk_rows}


def inventory_rows(facts: dict) -> list[Row]:
    """The "what this node has" rows; a probe (or its formatting) that raised is one "fail" row."""
    rows = []
    for name, fmt in FORMATS.items():
        if name not in facts:
            continue
        found = facts[name]
        if isinstance(found, dict) and "error" in found:
            rows.append(Row(name, "fail", "probe failed", found["error"]))
            continue
        formatted = guarded(fmt, found, facts) if name == "gpus" else guarded(fmt, found)
        rows.extend(formatted if isinstance(formatted, list) else
                    [Row(name, "fail", "report failed", formatted["error"])])
    return rows


# -- what will work here ----------------------------------------------------------------------

def vllm_usable(facts: dict) -> tuple[bool, str]:
    """Whether a vLLM engine can start here, and why (not)."""
    if "error" in facts.get("vllm", {}):
        return False, f"the vLLM probe failed: {facts['vllm']['error']}"
    v = _facts(facts, "vllm")
    if not v.get("installed") or not v.get("in_range") or v.get("reason"):
        return False, v.get("reason", "vLLM was not probed")
    if v["build"] == "cuda" and not facts.get("gpus"):
        return False, "vLLM's CUDA build sees no GPU here"
    return True, f"vLLM {v['version']} {'CPU build' if v['build'] == 'cpu' else 'on CUDA'}"


def min_capability(facts: dict) -> float:
    """The lowest compute capability among the visible GPUs (0.0 without GPUs)."""
    gpus = facts.get("gpus") if isinstance(facts.get("gpus"), list) else []
    return min((float(g["capability"]) for g in gpus), default=0.0)


def engine_verdicts(facts: dict) -> list[Row]:
    from essa.engines.mode_choice import resolve_mode
    ok, why = vllm_usable(facts)
    libs = _facts(facts, "libraries")
    torch_ok = _facts(facts, "torch").get("installed", False)
    missing = [n for n in ("transformers", "peft") if not libs.get(n)] + ([] if torch_ok else ["torch"])
    on_cpu = _facts(facts, "vllm").get("build") == "cpu"
    auto = resolve_mode("auto", "none", on_cpu) + (" (hybrid with engine.eager)" if on_cpu else "")
    return [Row("engine.backend vllm", _yes(ok), why if ok else "", "" if ok else why),
            Row("engine.backend transformers", _yes(not missing), "",
                f"missing {', '.join(missing)}" if missing else ""),
            Row("engine.mode merged, hybrid", _yes(ok), "dense base only" if ok else "", "" if ok else why),
            Row("engine.mode adapter", _yes(ok), "", "" if ok else why),
            Row("engine.mode auto", "info" if ok else "no", f"-> {auto}; adapter for a quantized base or "
                "tensor_parallel_size > 1" if ok else "", "" if ok else why)]


def dtype_verdicts(facts: dict) -> list[Row]:
    d = _facts(facts, "dtype")
    if not d:
        failed = facts.get("dtype", {}).get("error", "")
        return [Row("model.dtype auto", "no", "", f"the dtype probe failed: {failed}" if failed else
                    "the dtype was not probed")]
    return [Row("model.dtype auto", "info", f"-> {d['auto']}", d["reason"])]


def vllm_quant_verdicts(facts: dict) -> list[Row]:
    ok, why = vllm_usable(facts)
    names = ("model.quantization int8 (vLLM W8A8)", "model.quantization int4 (vLLM W4A16)",
             "model.quantization fp8 (vLLM)")
    if not ok:
        return [Row(n, "no", "", why) for n in names]
    if _facts(facts, "vllm")["build"] == "cpu":
        int4_missing = _facts(facts, "vllm").get("cpu_int4_missing", "")
        return [Row(names[0], "ok", "oneDNN INT8 kernels (CPU build)"),
                Row(names[1], _yes(not int4_missing), "" if int4_missing else "cpu_gemm_wna16 kernel",
                    int4_missing + ("; use the transformers engine's int4 (nf4) or CUDA vLLM"
                                    if int4_missing else "")),
                Row(names[2], "no", "", "vLLM's fp8 runs on CUDA GPUs only, not on its CPU build")]
    cc = min_capability(facts)  # vLLM's get_min_capability: 7.5 for W8A8/W4A16, 8.9 native FP8
    low = f"needs compute capability >= 7.5; the lowest GPU here has {cc}"
    fp8 = (Row(names[2], "ok", "native FP8 (compute capability >= 8.9)") if cc >= 8.9 else
           Row(names[2], "ok", "weight-only FP8 (Marlin)", f"compute capability {cc} < 8.9: no FP8 "
               "matmuls, memory saving only") if cc >= 7.5 else Row(names[2], "no", "", low))
    return [Row(names[0], _yes(cc >= 7.5), "", "" if cc >= 7.5 else low),
            Row(names[1], _yes(cc >= 7.5), "", "" if cc >= 7.5 else low), fp8]


def hf_quant_verdicts(facts: dict) -> list[Row]:
    b = facts.get("bitsandbytes", {})
    ok = bool(b.get("installed") and b.get("works"))
    why = (f"the bitsandbytes probe failed: {b['error']}" if "error" in b else
           b.get("reason", "bitsandbytes was not probed"))
    return [Row("transformers int8, int4 (bitsandbytes nf4)", _yes(ok), f"on {b['device']}" if ok else "",
                why),
            Row("transformers fp8", "no", "", "bitsandbytes has no FP8; use engine.backend vllm on CUDA")]


def training_verdicts(facts: dict) -> list[Row]:
    libs = _facts(facts, "libraries")
    torch_facts = _facts(facts, "torch")
    cuda = bool(torch_facts.get("cuda_available") and facts.get("gpus"))
    bnb = facts.get("bitsandbytes", {})
    qlora = "QLoRA nf4" if bnb.get("installed") and bnb.get("works") else "no QLoRA: bitsandbytes not working"
    # what sft.trainer / grpo.generation 'auto' resolve to here (essa/sft/setup.py, essa/baselines/grpo.py)
    sft_device = f"CUDA (trl trainer, bf16 autocast, {qlora})" if cuda else "CPU (loop trainer, float32)"
    grpo_device = (f"CUDA (bf16, generation {'vLLM colocated' if vllm_usable(facts)[0] else 'transformers'})"
                   if cuda else "CPU (float32, transformers generation)")
    sft_missing = [n for n in ("transformers", "peft") if not libs.get(n)] + \
        ([] if torch_facts.get("installed") else ["torch"]) + \
        ([n for n in ("trl", "datasets") if not libs.get(n)] if cuda else [])
    grpo_missing = sorted(set(sft_missing + [n for n in ("trl", "datasets") if not libs.get(n)]))
    mpi = _facts(facts, "mpi")
    mpi_ok = bool(mpi.get("mpi4py") and mpi.get("mpirun"))
    quant = _facts(facts, "quantize_venv")
    nltk = _facts(facts, "nltk")
    ifeval_why = nltk.get("reason") or ("" if libs.get("if-verifiable") else "if-verifiable is not installed")
    return [Row("essa-sft", _yes(not sft_missing), f"on {sft_device}" if not sft_missing else "",
                f"missing {', '.join(sft_missing)}" if sft_missing else ""),
            Row("essa-grpo", _yes(not grpo_missing), f"on {grpo_device}" if not grpo_missing else "",
                f"missing {', '.join(grpo_missing)}" if grpo_missing else ""),
            Row("essa-train under MPI", _yes(mpi_ok), mpi.get("vendor", ""), mpi.get("reason", "") or
                ("" if mpi_ok else "MPI was not probed, or its probe failed")),
            Row("essa quantize (int8/int4 copies)", _yes(bool(quant.get("llmcompressor"))), "",
                quant.get("reason", "the quantize-venv probe failed")),
            Row("task ifeval", _yes(not ifeval_why), "", ifeval_why)]


VERDICTS = (engine_verdicts, dtype_verdicts, vllm_quant_verdicts, hf_quant_verdicts, training_verdicts)


def verdict_rows(facts: dict) -> list[Row]:
    """The "what will work here" rows; a verdict that raised is one "fail" row."""
    rows = []
    for verdict in VERDICTS:
        found = guarded(verdict, facts)
        rows.extend(found if isinstance(found, list) else
                    [Row(verdict.__name__, "fail", "verdict failed", found["error"])])
    return rows


# -- output -----------------------------------------------------------------------------------

MARKS = {"ok": "ok", "no": "no", "info": "", "fail": "FAIL"}


def render(title: str, rows: list[Row]) -> list[str]:
    """Aligned lines: mark, name, value, then the reason after ' -- '."""
    width = max((len(r.name) for r in rows), default=0)
    lines = [title]
    for r in rows:
        tail = "  -- " + r.reason if r.reason else ""
        lines.append(f"  {MARKS[r.status]:<4} {r.name:<{width}}  {r.value}{tail}".rstrip())
    return lines


def missing_core(facts: dict) -> bool:
    """--strict: torch or a supported vLLM is missing (or its probe failed)."""
    torch_facts, vllm_facts = facts.get("torch", {}), facts.get("vllm", {})
    return ("error" in torch_facts or not torch_facts.get("installed")
            or "error" in vllm_facts or not vllm_facts.get("installed") or not vllm_facts.get("in_range"))


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to stdout (vLLM's logs, C-level prints) to stderr meanwhile, so
    that stdout carries the report only (``--json`` stays parseable)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="essa doctor", description="Print what this node has (torch and CUDA, GPUs, the CPU's bf16, "
        "vLLM, bitsandbytes, flash-attn, MPI, libraries) and which engines, modes, dtypes and "
        "quantizations will work here, each missing piece with a one-line reason.")
    parser.add_argument("--json", action="store_true", help="print the facts and verdicts as JSON")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when torch or vLLM is missing (or vLLM is outside the supported range)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Probe, print the report; 0, or 1 with --strict when torch or vLLM is missing."""
    args = parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines say nothing useful here
    with stdout_to_stderr():
        facts = collect()
        inventory, verdicts = inventory_rows(facts), verdict_rows(facts)
    if args.json:
        print(json.dumps({**facts, "works": [asdict(r) for r in verdicts]}, indent=2, default=str))
    else:
        print("\n".join(render("What this node has", inventory) + [""] +
                        render("What will work here", verdicts)))
    return 1 if args.strict and missing_core(facts) else 0


if __name__ == "__main__":
    sys.exit(main())
