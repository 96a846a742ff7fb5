"""Export a search vector (best or mean solution) as a PEFT adapter or a merged full model.

The vector is a search vector of the space (its parametrization says how to read it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from essa.adapters.peft_io import peft_tensors, write_adapter
from essa.adapters.svd_space import SvdSpace

EXPORT_INFO = "essa_export.json"
# Files a model folder needs besides the weights for `from_pretrained` of a tokenizer.
_TOKENIZER_GLOBS = ("tokenizer*", "special_tokens_map.json", "vocab.*", "merges.txt",
                    "chat_template.*", "generation_config.json")


def export_adapter(space: SvdSpace, vector: np.ndarray, out_dir: str | Path,
                   base_model_name_or_path: str | None = None,
                   dtype: torch.dtype = torch.float32) -> Path:
    """Write `vector` as a PEFT LoRA folder that peft's PeftModel.from_pretrained and vLLM load.

    The adapter_config.json is the source's, with base_model_name_or_path replaced when given.
    An `essa_export.json` beside it records the search space (with its parametrization) and the
    search vector, for provenance.
    """
    out_dir = Path(out_dir)
    config = dict(space.adapter.config)
    if base_model_name_or_path is not None:
        config["base_model_name_or_path"] = str(base_model_name_or_path)
    write_adapter(out_dir, peft_tensors(space.candidate(vector, dtype=dtype)), config)
    info = {"space": space.record(), "vector": np.asarray(vector, dtype=np.float64).tolist()}
    (out_dir / EXPORT_INFO).write_text(json.dumps(info))
    return out_dir


def export_merged(space: SvdSpace, vector: np.ndarray, base_model_path: str | Path,
                  out_dir: str | Path, torch_dtype: torch.dtype | None = None) -> Path:
    """Merge the candidate into the base model (peft merge_and_unload) and save a full HF model.

    The tokenizer files of the base model folder are copied along, so the result is self-contained.
    """
    from peft import PeftModel  # heavy: only this export needs peft and transformers
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    kwargs = {} if torch_dtype is None else {"dtype": torch_dtype}
    model = AutoModelForCausalLM.from_pretrained(str(base_model_path), **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        export_adapter(space, vector, tmp, str(base_model_path))
        merged = PeftModel.from_pretrained(model, tmp).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    base = Path(base_model_path)
    if base.is_dir():
        for pattern in _TOKENIZER_GLOBS:
            for src in base.glob(pattern):
                if not (out_dir / src.name).exists():
                    shutil.copy2(src, out_dir / src.name)
    return out_dir
