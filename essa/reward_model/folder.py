"""What a reward-model folder holds, read from config.json and safetensors headers only.

No torch here: the dry-run plan and the checks before a worker loads anything use it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

# bytes per element of the safetensors dtypes
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                "I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}


class RewardModelError(FileNotFoundError):
    """The reward model folder is missing, is not a sequence-classification model, or has no
    output ``fitness.reward_model.output``. A FileNotFoundError, so the entry points report it as
    a set-up error (exit 2) like a missing base model."""


@dataclass(frozen=True)
class RewardModelInfo:
    """A checked reward-model folder and the output the fitness reads."""

    folder: Path
    architecture: str
    labels: list[str]  # id2label in index order (num_labels entries)
    index: int  # the logit used as the reward
    config: dict

    @property
    def label(self) -> str:
        return self.labels[self.index]


def check_reward_model(path: str, output: int | str = 0) -> RewardModelInfo:
    """The folder at ``path`` as a reward model, or a :class:`RewardModelError` naming the path
    and what is wrong (missing, no config.json, not ``*ForSequenceClassification``, no such
    output)."""
    folder = Path(path).expanduser()
    where = f"fitness.reward_model.path {folder}"
    if not folder.is_dir():
        raise RewardModelError(f"{where}: folder not found (absolute: {folder.absolute()}); it must be "
                               f"a local Hugging Face folder, nothing is downloaded at run time "
                               f"(e.g. `hf download ORG/NAME --local-dir {path}` on a machine with network)")
    if not (folder / "config.json").is_file():
        raise RewardModelError(f"{where}: not a Hugging Face model folder (no config.json)")
    config = json.loads((folder / "config.json").read_text())
    archs = config.get("architectures") or []
    seq = [a for a in archs if a.endswith("ForSequenceClassification")]
    if not seq:
        raise RewardModelError(f"{where}: not a sequence-classification model: config.json names "
                               f"architectures {archs}; a reward model here loads with "
                               f"AutoModelForSequenceClassification (an architecture "
                               f"*ForSequenceClassification, one score head)")
    id2label = config.get("id2label") or {}
    n = len(id2label) if id2label else int(config.get("num_labels", 2))  # transformers' default: 2
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]
    index = _output_index(output, labels, where)
    return RewardModelInfo(folder, seq[0], labels, index, config)


def _output_index(output: int | str, labels: list[str], where: str) -> int:
    """An index into the logits, or a label name from id2label; anything else names what exists."""
    if isinstance(output, int) or (isinstance(output, str) and output.lstrip("-").isdigit()):
        index = int(output)
        if 0 <= index < len(labels):
            return index
    elif output in labels:
        return labels.index(output)
    have = ", ".join(f"{i} ({name!r})" for i, name in enumerate(labels))
    raise RewardModelError(f"fitness.reward_model.output {output!r}: no such output in {where}; it has "
                           f"{len(labels)}: {have}")


def weight_stats(folder: Path) -> tuple[int, int] | None:
    """(parameters, bytes as stored) from the safetensors headers, None without safetensors."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    params = nbytes = 0
    for path in files:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))  # header: little-endian length, then JSON
            header = json.loads(f.read(size))
        for name, t in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in t["shape"]:
                count *= dim
            params += count
            nbytes += count * _DTYPE_BYTES.get(t["dtype"], 4)
    return params, nbytes


def estimate_parameters(config: dict) -> int | None:
    """About how many parameters a decoder-style classifier (Llama, Qwen, Mistral, Gemma) has,
    from its config.json sizes: embeddings, attention, gated MLP, score head (norms left out)."""
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    if not all(isinstance(config.get(k), int) for k in keys):
        return None
    h, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads") or heads
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o and k, v
    mlp = 3 * h * config["intermediate_size"]
    labels = len(config.get("id2label") or {}) or 1
    return config["vocab_size"] * h + config["num_hidden_layers"] * (attention + mlp) + h * labels
