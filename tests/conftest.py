"""Shared fixtures: the real demo model (prepared once per session) and one real vLLM engine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The prepared SmolLM2-135M-Instruct folder (converted from the pip package if needed)."""
    from essa.models import prepare_demo_model
    return prepare_demo_model(check=False)


def _test_engine_config(**kw):
    from essa.config import EngineConfig
    return EngineConfig(max_model_len=512, kv_cache_gib=1, enforce_eager=True, **kw)


@pytest.fixture(scope="session")
def vllm_engine(demo_model):
    """One real vLLM CPU engine in merged mode for the whole session (eager: starts fast)."""
    from essa.config import ModelConfig
    from essa.engines.vllm_engine import VLLMEngine
    engine = VLLMEngine(demo_model, ModelConfig(path=str(demo_model)), _test_engine_config(mode="merged"))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_lora_engine(demo_model):
    """A second real engine with LoRA enabled (adapter mode; switchable to merged for comparisons)."""
    from essa.config import ModelConfig
    from essa.engines.vllm_engine import VLLMEngine
    engine = VLLMEngine(demo_model, ModelConfig(path=str(demo_model)),
                        _test_engine_config(mode="adapter", max_loras=4), both_modes=True)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def compiled_lora_engine(demo_model):
    """A compiled LoRA engine (adapter mode, switchable to merged). Session-scoped like the other
    engines: closing a vLLM engine mid-session tears down the process's parallel groups that the
    other (still open) engines use."""
    from essa.config import EngineConfig, ModelConfig
    from essa.engines.vllm_engine import VLLMEngine
    cfg = EngineConfig(max_model_len=512, kv_cache_gib=1, enforce_eager=False, mode="adapter", max_loras=4)
    engine = VLLMEngine(demo_model, ModelConfig(path=str(demo_model)), cfg, both_modes=True)
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
