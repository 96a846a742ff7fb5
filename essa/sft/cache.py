"""The warm-start cache: one SFT adapter per distinct setting, trained once and reused.

A run with ``adapter.init: sft`` asks :func:`ensure_warm_start` for its starting adapter. The
folder is ``<output_dir>/warm-start/<key>``, where the key hashes everything that changes the
trained adapter: the resolved model path and prompt format, the task section, the sft section
(less ``threads`` and ``eval_examples``, which do not change the weights), the adapter's rank,
alpha and target modules, and the run seed. Runs that differ only in search settings share it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from essa.config import to_dict
from essa.sft.publish import SUMMARY_FILE
from essa.models import resolve_model_path
from essa.sft.train import train_sft

CACHE_FOLDER = "warm-start"
# How fast, on what, and what is reported: not what is trained. A warm start trained on a GPU node
# serves a run on any node (the trainer and precision change an adapter only by rounding).
_NOT_IN_KEY = ("threads", "eval_examples", "trainer", "device", "precision", "gradient_checkpointing",
               "max_batch_tokens", "device_memory_gib", "quantization")
_COMPLETE = ("adapter_config.json", "adapter_model.safetensors", SUMMARY_FILE)


def warm_start_key_fields(config) -> dict:
    """The settings the cache key hashes (a JSON-ready mapping)."""

    sft = {k: v for k, v in to_dict(config.sft).items() if k not in _NOT_IN_KEY}
    if config.sft.quantization != "none":  # a QLoRA adapter learns around the 4-bit base's errors
        sft["quantization"] = config.sft.quantization
    if config.sft.source == "self":  # the sampled answers are cut at the engine's token limit
        sft["max_tokens"] = config.engine.max_tokens
    return {
        "model": str(resolve_model_path(config.model.path).resolve()),
        "chat_template": config.model.chat_template,
        "task": to_dict(config.task),
        "sft": sft,
        "adapter": {"rank": config.adapter.rank, "alpha": config.adapter.alpha,
                    "target_modules": list(config.adapter.target_modules)},
        "seed": config.seed,
    }


def warm_start_key(config) -> str:
    """A short hex digest of :func:`warm_start_key_fields`."""
    text = json.dumps(warm_start_key_fields(config), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def warm_start_dir(config) -> Path:
    """Where the warm start of ``config`` lives (whether or not it is trained yet)."""
    return Path(config.output_dir) / CACHE_FOLDER / warm_start_key(config)


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a published adapter (folders appear only when complete)."""
    return all((Path(folder) / name).is_file() for name in _COMPLETE)


def ensure_warm_start(config, progress: bool = True) -> Path:
    """The SFT warm-start adapter folder of ``config``, trained now if not cached yet.

    Call it from one process (the master): two processes missing the cache at once would both
    train, and the later one would replace the earlier one's identical folder.
    """
    if config.adapter.init != "sft":
        raise ValueError(f"ensure_warm_start: adapter.init is {config.adapter.init!r}; the warm-start "
                         f"cache serves adapter.init='sft' only")
    folder = warm_start_dir(config)
    if is_complete(folder):
        return folder

    train_sft(config, folder, progress=progress,
              extra_summary={"cache_key": folder.name, "key_fields": warm_start_key_fields(config)})
    return folder
