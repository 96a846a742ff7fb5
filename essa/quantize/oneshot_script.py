"""The child program of ``essa quantize``: one llmcompressor ``oneshot`` run, in the quantize venv.

    /path/to/.venv-quantize/bin/python oneshot_script.py SPEC.json

It runs under the quantize venv's python, where essa is not installed, so it imports no essa
module. SPEC.json holds ``source`` (a local HF folder), ``output`` (folder to write), ``scheme``
(``int8`` | ``int4``), ``group_size`` (int4: an int or ``"channel"``; int8: null), ``calibrate``,
``calibration_file`` (JSONL of ``{"text": ...}`` or null) and ``max_seq_len``. It writes the
compressed-tensors model and the tokenizer to ``output`` and prints one JSON line (seconds and
library versions) on stdout; everything the libraries print goes to stderr.

Round-to-nearest (no data) by default. With ``calibrate``: int8 is SmoothQuant then GPTQ W8A8,
int4 GPTQ W4A16, both on the calibration texts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

SMOOTHING_STRENGTH = 0.8  # llmcompressor's W8A8 examples use 0.8 (the paper: 0.5 to 0.85)


def int4_scheme(group_size):
    """W4A16: symmetric int4 weights, per group of input columns or per output channel."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    if group_size == "channel":
        weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="channel")
    else:
        weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group",
                                   group_size=int(group_size))
    return QuantizationScheme(targets=["Linear"], weights=weights)


def build_recipe(spec: dict) -> list:
    """The llmcompressor modifiers of one run (lm_head stays in full precision)."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    ignore = ["lm_head"]
    if spec["scheme"] == "int8":
        if not spec["calibrate"]:
            return [QuantizationModifier(targets="Linear", scheme="W8A8", ignore=ignore)]
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
        # SmoothQuant moves activation outliers into the weights before GPTQ rounds them
        return [SmoothQuantModifier(smoothing_strength=SMOOTHING_STRENGTH),
                GPTQModifier(targets="Linear", scheme="W8A8", ignore=ignore)]
    if spec["scheme"] == "int4":
        groups = {"group_0": int4_scheme(spec["group_size"])}
        modifier = GPTQModifier if spec["calibrate"] else QuantizationModifier
        return [modifier(config_groups=groups, ignore=ignore)]
    raise ValueError(f"unknown scheme {spec['scheme']!r}")


def calibration_dataset(path: str, tokenizer, max_seq_len: int):
    """The calibration texts as a ``datasets.Dataset`` of token ids (cut to ``max_seq_len``).

    The texts already carry the chat template's special tokens, so none are added."""
    import datasets
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    if not texts:
        raise ValueError(f"{path}: no calibration texts")
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_seq_len)
    return datasets.Dataset.from_dict({"input_ids": encoded["input_ids"],
                                       "attention_mask": encoded["attention_mask"]})


def versions() -> dict:
    """Versions of the libraries that made the checkpoint."""
    import compressed_tensors
    import llmcompressor
    import torch
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "llmcompressor": llmcompressor.__version__,
            "compressed-tensors": compressed_tensors.__version__}


def quantize(spec: dict) -> dict:
    """Load, quantize, save; returns the result record."""
    t0 = time.time()
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["source"])
    # the checkpoint's own dtype: unquantized parts (embeddings, norms) keep their size
    model = AutoModelForCausalLM.from_pretrained(spec["source"], dtype="auto")
    data = {}
    if spec["calibrate"]:
        dataset = calibration_dataset(spec["calibration_file"], tokenizer, spec["max_seq_len"])
        data = {"dataset": dataset, "num_calibration_samples": len(dataset),
                "max_seq_length": spec["max_seq_len"],
                "shuffle_calibration_samples": False}  # the sample is drawn (seeded) already
    oneshot(model=model, recipe=build_recipe(spec), **data)
    model.save_pretrained(spec["output"], save_compressed=True)
    tokenizer.save_pretrained(spec["output"])
    return {"seconds": round(time.time() - t0, 1), "versions": versions()}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    # stdout carries the one result line; anything else printed (also by C code) goes to stderr
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    result = quantize(spec)
    result_out.write(json.dumps(result) + "\n")
    result_out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
