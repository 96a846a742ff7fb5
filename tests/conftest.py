"""Shared fixtures: the real demo model (prepared once per session) and one real vLLM engine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from essa.config import EngineConfig, ModelConfig
from essa.models import prepare_demo_model

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The prepared SmolLM2-135M-Instruct folder (converted from the pip package if needed)."""
    return prepare_demo_model(check=False)


def start_vllm_engine(model: Path, dtype: str = "auto", quantization: str = "none", quantized_path: str = "",
                      **engine_settings):
    """A real vLLM engine on the demo model, small KV cache, eager unless told otherwise."""
    from essa.engines.vllm_engine import VLLMEngine  # imports vLLM: only in sessions that start one
    cfg = EngineConfig(**{"max_model_len": 512, "kv_cache_gib": 1, "enforce_eager": True, **engine_settings})
    return VLLMEngine(model, ModelConfig(path=str(model), dtype=dtype, quantization=quantization,
                                         quantized_path=quantized_path), cfg)


# The session's engines. Session-scoped: closing a vLLM engine mid-session tears down the
# process's parallel groups that the other (still open) engines use.
@pytest.fixture(scope="session")
def vllm_engine(demo_model):
    """A real vLLM CPU engine in merged mode (eager: starts fast)."""
    engine = start_vllm_engine(demo_model, mode="merged")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_lora_engine(demo_model):
    """A hybrid engine: LoRA enabled and merged weights ready (tests compare its two modes,
    ``engine.adapter_mode`` and ``engine.merged_mode``, on the same vLLM instance)."""
    engine = start_vllm_engine(demo_model, mode="hybrid", max_loras=4)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def compiled_lora_engine(demo_model):
    """A compiled hybrid engine (LoRA and merged weights)."""
    engine = start_vllm_engine(demo_model, mode="hybrid", max_loras=4, enforce_eager=False)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def small_adapter(demo_model, tmp_path_factory):
    """A fresh rank-8 q/k/v/o adapter for the demo model, small like an SFT update (2% of ||W||)."""
    from essa.adapters.init import write_fresh_adapter
    return write_fresh_adapter(demo_model, tmp_path_factory.mktemp("adapter") / "fresh", rank=8,
                               rel_norm=0.02, seed=3)


def run_cli(args: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run one of the project's console scripts from this venv; returns the CompletedProcess."""
    import subprocess
    full_env = {**os.environ, **(env or {})}
    exe = VENV_BIN / args[0]
    return subprocess.run([str(exe), *args[1:]], cwd=cwd or ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def int8_model(demo_model) -> Path:
    """The round-to-nearest W8A8 copy of the demo model (`essa prepare-model --quantize int8`;
    `make setup` makes it, so this is usually a lookup)."""
    from essa.quantize.paths import quantized_dir, served_checkpoint
    folder = quantized_dir(demo_model, "int8")
    if not folder.is_dir():
        proc = run_cli(["essa", "prepare-model", "--quantize", "int8"], timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return served_checkpoint(demo_model, "int8")


@pytest.fixture(scope="session")
def int8_engine(demo_model, int8_model):
    """A real vLLM CPU engine on the INT8 (W8A8) demo model: candidates as LoRA adapters."""
    engine = start_vllm_engine(demo_model, quantization="int8", mode="auto", max_loras=4)
    yield engine
    engine.close()
