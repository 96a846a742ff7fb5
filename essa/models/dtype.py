"""Which dtype the base model runs in: ``model.dtype: auto`` and the rule behind it.

bf16 is fast only where the hardware computes it: CUDA GPUs with bf16, and CPUs with AVX512_BF16
or AMX. On other CPUs (AVX2-only x86: most laptops and many cloud VMs) PyTorch and oneDNN emulate
it, several times slower than float32 (benchmarks/RESULTS.md, "Cold start, dtype and
torch.compile"). ``auto`` therefore picks bf16 where it is native and float32 elsewhere; an
explicit dtype is honoured, with a warning when it will be slow here. Both inference engines
(and so essa-train, essa-eval and the dry-run plan) ask :func:`resolve_dtype`. SFT and the GRPO
baseline train in float32 on the CPU and in bf16 autocast where :func:`native_bf16` holds
(essa/sft/setup.py, essa/baselines/grpo.py).
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype to load the model in, why, and a warning when it is slow on this device."""

    dtype: str  # bfloat16, float16 or float32
    reason: str
    warning: str = ""

    def describe(self, requested: str) -> str:
        """One line for logs and the dry-run plan."""
        if requested == "auto":
            return f"model.dtype auto -> {self.dtype} ({self.reason})"
        return f"model.dtype {self.dtype} (as configured)"


@dataclass(frozen=True)
class Device:
    """What the rule needs to know of a device; :func:`probe_device` reads the real one."""

    kind: str  # "cuda" or "cpu"
    name: str = ""
    cuda_bf16: bool = False
    aten_capability: str = ""  # torch.backends.cpu.get_cpu_capability(): AVX2, AVX512, ...
    cpu_flags: frozenset = frozenset()  # bf16-relevant flags: avx512_bf16, amx_bf16, arm_bf16


def probe_device(device: str = "auto") -> Device:
    """This process's device: CUDA when asked for or available (``device='auto'``), else the CPU."""
    import torch
    if (device == "auto" or device.startswith("cuda")) and torch.cuda.is_available():
        return Device("cuda", torch.cuda.get_device_name(0), cuda_bf16=torch.cuda.is_bf16_supported())
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    flags = {f for f in ("avx512_bf16", "amx_bf16") if caps.get(f)}
    if caps.get("architecture") in ("aarch64", "arm64") and caps.get("bf16"):
        flags.add("arm_bf16")
    return Device("cpu", caps.get("cpu_name", ""), aten_capability=torch.backends.cpu.get_cpu_capability(),
                  cpu_flags=frozenset(flags))


def native_bf16(dev: Device) -> tuple[bool, str]:
    """Whether ``dev`` computes bf16 in hardware, and the reason in words."""
    if dev.kind == "cuda":
        return dev.cuda_bf16, f"CUDA {dev.name} {'with' if dev.cuda_bf16 else 'without'} bf16"
    # ATEN_CPU_CAPABILITY can cap PyTorch's kernels below what the CPU has: then bf16 is emulated.
    capped = dev.aten_capability in ("DEFAULT", "AVX2", "")
    has = sorted(dev.cpu_flags)
    if has and not capped:
        return True, f"CPU with native bf16 ({', '.join(has)}; PyTorch capability {dev.aten_capability})"
    return False, (f"CPU without native bf16 (PyTorch capability {dev.aten_capability or 'unknown'}"
                   f"{', no AVX512_BF16/AMX' if not has else ''})")


def resolve_dtype(requested: str, dev: Device | None = None) -> DtypeChoice:
    """``auto`` -> bfloat16 where ``dev`` computes it natively, else float32; an explicit dtype is
    kept, with a warning when it is emulated (slow) on ``dev``."""
    if requested not in DTYPES:
        raise ValueError(f"model.dtype: {requested!r} is not allowed; choose one of {', '.join(DTYPES)}")
    dev = dev or probe_device()
    native, why = native_bf16(dev)
    if requested == "auto":
        return DtypeChoice("bfloat16" if native else "float32", why)
    warning = ""
    if requested in ("bfloat16", "float16") and dev.kind == "cpu" and not native:
        warning = (f"model.dtype {requested} on a {why}: it is emulated and runs many times slower "
                   "than float32; use model.dtype auto or float32")
    return DtypeChoice(requested, why, warning)

