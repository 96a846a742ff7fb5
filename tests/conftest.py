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


@pytest.fixture(scope="session")
def vllm_engine(demo_model):
    """One real vLLM CPU engine on the demo model for the whole session (eager: starts fast)."""
    from essa.config import EngineConfig, ModelConfig
    from essa.engines.vllm_engine import VLLMEngine
    engine = VLLMEngine(demo_model, ModelConfig(path=str(demo_model)),
                        EngineConfig(max_model_len=512, memory_fraction=0.15, enforce_eager=True))
    yield engine
    engine.close()


def run_cli(args: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run one of the project's console scripts from this venv; returns the CompletedProcess."""
    import subprocess
    full_env = {**os.environ, **(env or {})}
    exe = VENV_BIN / args[0]
    return subprocess.run([str(exe), *args[1:]], cwd=cwd or ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
