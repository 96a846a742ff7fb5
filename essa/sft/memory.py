"""How much device memory the SFT warm start needs: the ``essa-sft --dry-run`` estimate.

Read from the model's ``config.json`` alone (no weights are loaded), for the decoder shapes of
Llama, Qwen2 and Mistral (attention q/k/v/o, a gated MLP gate/up/down). The estimate adds:

- weights: 2 bytes a parameter in bf16, 4 in float32; under nf4 (QLoRA) the decoder's linear layers
  take about 0.52 bytes (4-bit values, double-quantized scales) and the embeddings and lm_head stay
  in bf16;
- LoRA: 16 bytes a factor parameter (float32 value, gradient and AdamW's two moments);
- activations for one micro-batch of the longest sequences (``sft.max_length`` tokens, the upper
  bound): what the backward pass keeps per decoder layer, or with gradient checkpointing each
  layer's input plus one layer recomputed, and the logits in float32 with their gradient;
- a fixed 1.5 GiB for the CUDA context and kernels, then 10% for allocator fragmentation.

It is a planning figure, meant to err high; ``benchmarks/gpu_check.py`` records measured peaks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from essa.config import ConfigError

GIB = 1024 ** 3
CONTEXT_BYTES = int(1.5 * GIB)  # CUDA context, cuBLAS workspaces
FRAGMENTATION = 1.10
NF4_BYTES = 0.52  # 4 bits + one fp8 absmax per 64 values + its fp32 scale per 256 blocks
LORA_BYTES = 16  # float32 value + grad + AdamW exp_avg + exp_avg_sq


@dataclass(frozen=True)
class ModelShape:
    """The decoder sizes the estimate needs (from config.json)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each decoder linear layer, by module name."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}

    def decoder_linear_params(self) -> int:
        return self.layers * sum(i * o for i, o in self.module_shapes().values())

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)


def read_model_shape(model_path: Path) -> ModelShape:
    """The decoder shape in ``model_path/config.json``; a clear error when it lacks one."""
    path = Path(model_path) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json, so no memory estimate")
    cfg = json.loads(path.read_text())
    cfg = cfg.get("text_config", cfg)  # multimodal wrappers keep the decoder's sizes there
    try:
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        return ModelShape(hidden=hidden, intermediate=int(cfg["intermediate_size"]),
                          layers=int(cfg["num_hidden_layers"]), heads=heads,
                          kv_heads=int(cfg.get("num_key_value_heads") or heads),
                          head_dim=int(cfg.get("head_dim") or hidden // heads),
                          vocab=int(cfg["vocab_size"]),
                          tied_embeddings=bool(cfg.get("tie_word_embeddings", False)))
    except KeyError as e:
        raise ValueError(f"{path}: no {e.args[0]!r}; the SFT memory estimate knows Llama/Qwen2/"
                         f"Mistral-style decoders") from None


@dataclass(frozen=True)
class TrainingShape:
    """What the SFT run asks of the device (resolved: no 'auto' left)."""

    precision: str  # bf16 or float32
    quantization: str  # none or nf4
    gradient_checkpointing: bool
    micro_batch_rows: int  # sequences in one forward pass
    sequence_tokens: int  # sft.max_length (the padded length of the longest batch, at most)
    lora_rank: int
    lora_targets: tuple[str, ...]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by part, and their total with context and fragmentation."""

    weights: int
    lora: int
    activations: int
    logits: int
    total: int
    unknown_targets: tuple[str, ...] = ()  # target modules the estimate has no shape for

    def lines(self) -> list[str]:
        """The table essa-sft --dry-run prints."""
        def gib(x: int) -> str:
            return f"{x / GIB:7.2f} GiB"
        out = [f"  weights           {gib(self.weights)}",
               f"  LoRA + AdamW      {gib(self.lora)}",
               f"  activations       {gib(self.activations)}",
               f"  logits + grad     {gib(self.logits)}",
               f"  total (+1.5 GiB context, +10%) {gib(self.total)}"]
        if self.unknown_targets:
            out.append(f"  (no shape for target modules {list(self.unknown_targets)}: not counted)")
        return out


def estimate_memory(shape: ModelShape, train: TrainingShape) -> MemoryEstimate:
    """Peak device memory of one SFT step (see the module docstring for what is counted)."""
    act_bytes = 2 if train.precision == "bf16" else 4
    linear, embed = shape.decoder_linear_params(), shape.embedding_params()
    if train.quantization == "nf4":
        weights = linear * NF4_BYTES + embed * 2
    else:
        weights = (linear + embed) * act_bytes
    modules = shape.module_shapes()
    lora_params = sum(train.lora_rank * sum(modules[t]) for t in train.lora_targets if t in modules)
    lora = lora_params * shape.layers * LORA_BYTES
    tokens = train.micro_batch_rows * train.sequence_tokens
    kv = shape.kv_heads * shape.head_dim
    # kept for backward per token and layer: norm inputs, q/k/v, attention out, MLP gate/up, the
    # activation and the product (SDPA/flash attention keeps no seq x seq matrix)
    per_layer = tokens * (6 * shape.hidden + 2 * kv + 4 * shape.intermediate) * act_bytes
    if train.gradient_checkpointing:
        activations = tokens * shape.hidden * act_bytes * shape.layers + per_layer
    else:
        activations = per_layer * shape.layers
    logits = tokens * shape.vocab * (act_bytes + 4 + 4)  # logits, their float32 copy, its gradient
    total = int((weights + lora + activations + logits + CONTEXT_BYTES) * FRAGMENTATION)
    unknown = tuple(t for t in train.lora_targets if t not in modules)
    return MemoryEstimate(int(weights), int(lora), int(activations), int(logits), total, unknown)


def micro_batch_rows(batch_size: int, sequence_tokens: int, max_batch_tokens: int) -> int:
    """Rows per forward pass: the largest divisor of ``batch_size`` whose padded tokens fit the
    budget (0: no budget, the whole batch). Equal micro-batches keep each step's loss the same."""
    if max_batch_tokens <= 0:
        return batch_size
    if sequence_tokens > max_batch_tokens:
        raise ConfigError(f"sft.max_batch_tokens={max_batch_tokens} is smaller than one sequence of "
                         f"{sequence_tokens} tokens; raise it or lower sft.max_length")
    return max(d for d in range(1, batch_size + 1)
               if batch_size % d == 0 and d * sequence_tokens <= max_batch_tokens)


def fitting_alternatives(shape: ModelShape, train: TrainingShape, budget: int) -> list[str]:
    """Settings that would bring the estimate under ``budget`` bytes, one change at a time, then
    all together; each as 'setting (estimate)'."""
    changes = []
    if not train.gradient_checkpointing:
        changes.append(("sft.gradient_checkpointing=true", {"gradient_checkpointing": True}))
    if train.quantization == "none":
        changes.append(("sft.quantization=nf4", {"quantization": "nf4"}))
    if train.micro_batch_rows > 1:
        changes.append((f"sft.max_batch_tokens={train.sequence_tokens}", {"micro_batch_rows": 1}))
    if train.sequence_tokens > 256:
        changes.append(("sft.max_length=256", {"sequence_tokens": 256}))
    out = []
    for label, change in changes:
        est = estimate_memory(shape, replace(train, **change))
        if est.total <= budget:
            out.append(f"{label} ({est.total / GIB:.1f} GiB)")
    if not out and changes:
        together = {k: v for _, change in changes for k, v in change.items()}
        est = estimate_memory(shape, replace(train, **together))
        if est.total <= budget:
            out.append(" + ".join(label for label, _ in changes) + f" ({est.total / GIB:.1f} GiB)")
    return out
