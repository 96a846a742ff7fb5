"""Faster multi-LoRA for vLLM's CPU build (adapter mode): two matrix products per layer.

vLLM's CPU punica ops gather every token's own copy of its adapter's matrices
(``lora_b[indices]``: tokens x out x rank per module) and multiply token by token, in float32;
that copy, not the arithmetic, made LoRA generation slow (benchmarks/RESULTS.md, "Own CPU LoRA
product and hybrid mode"). Here a LoRA layer with S slices (q, k, v of a fused qkv_proj) and L
adapter slots of rank r multiplies every token by all slots' A at once (tokens x S*L*r), zeroes
the columns of the slots the token does not use (slot -1: none), and adds, per slice, that block
times the stacked B. The products run in the model's dtype (bfloat16 uses the CPU's AMX/AVX512-BF16
units), where vLLM's own expand step rounds too. The product is one opaque torch operator
(``essa::cpu_lora_linear``), so a LoRA engine on the CPU keeps torch.compile (vLLM turns it off
with LoRA: its own ops cannot be traced); :func:`essa.engines.vllm_internals.install_cpu_lora`
puts it in place of vLLM's op.
"""

from __future__ import annotations

import contextlib

import torch


def stacked_weights(lora_a: tuple[torch.Tensor, ...], lora_b: tuple[torch.Tensor, ...],
                    dtype: torch.dtype) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(A of shape (S*L*r, in), per slice s the B rows of shape (L*r, out_s)) from vLLM's
    lora_a[s] (L, 1, r, in) and lora_b[s] (L, 1, out_s, r): slice s, slot l owns rows
    s*L*r + l*r .. + r of A and rows l*r .. l*r + r of slice s's B."""
    a_rows = [a.reshape(-1, a.shape[-1]) for a in lora_a]
    b_rows = []
    for b in lora_b:
        slots, width, rank = b.shape[0], b.shape[-2], b.shape[-1]
        # (L, out, r) -> (L*r, out): row l*r + j is column j of slot l's B
        b_rows.append(b.reshape(slots, width, rank).transpose(1, 2).reshape(slots * rank, width)
                      .to(dtype).contiguous())
    return torch.cat(a_rows).to(dtype).contiguous(), tuple(b_rows)


class LoraProductCache:
    """One engine's stacked adapter weights per LoRA layer and slot masks of the current step.

    Keyed by tensor addresses and version counters: vLLM writes adapters into its slot tensors
    and each step's token slots into its index buffer in place (the counters move). Addresses
    mean something only while the engine that owns them lives: one cache per engine."""

    def __init__(self):
        self.weights: dict[int, tuple[tuple, tuple]] = {}  # A's address -> (versions, stacked)
        self.step: tuple | None = None  # (index buffer address, version, tokens) of self.masks
        self.masks: dict[tuple, torch.Tensor | None] = {}  # (slots, rank, S, dtype) -> mask

    def stacked(self, lora_a, lora_b, dtype: torch.dtype) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """:func:`stacked_weights` of one layer, rebuilt only after vLLM wrote into its slots."""
        key = lora_a[0].data_ptr()
        versions = tuple(t._version for t in (*lora_a, *lora_b)) + (dtype,)
        hit = self.weights.get(key)
        if hit is None or hit[0] != versions:
            hit = self.weights[key] = (versions, stacked_weights(lora_a, lora_b, dtype))
        return hit[1]

    def step_mask(self, slot_buffer: torch.Tensor, tokens: int, lora_a, dtype: torch.dtype) -> torch.Tensor | None:
        """(tokens, S*L*r) 0/1, 1 on the r columns of each slice's block that the token's slot owns;
        None when no token uses an adapter. Built once per step and layer shape: every LoRA layer
        of a step reads the same indices."""
        step = (slot_buffer.data_ptr(), slot_buffer._version, tokens)
        if self.step != step:
            self.step, self.masks = step, {}
        key = (lora_a[0].shape[0], lora_a[0].shape[-2], len(lora_a), dtype)  # L, r, S, dtype
        if key not in self.masks:
            token_slots, used = slot_buffer[:tokens], slot_buffer[:tokens] >= 0
            one_hot = torch.zeros(tokens, key[0], dtype=dtype)
            one_hot[used.nonzero().squeeze(1), token_slots[used]] = 1
            self.masks[key] = one_hot.repeat_interleave(key[1], dim=1).repeat(1, key[2]) \
                if used.any() else None
        return self.masks[key]


# The cache of the engine whose pass runs now. The compiled graph calls the product as an opaque
# operator that takes tensors only, so the product finds its engine's cache here, at run time.
_active_cache: LoraProductCache | None = None


@contextlib.contextmanager
def caching(cache: LoraProductCache | None):
    """LoRA products inside this block use ``cache`` (None: nothing is kept between calls)."""
    global _active_cache
    saved, _active_cache = _active_cache, cache
    try:
        yield
    finally:
        _active_cache = saved


def _lora_linear(y: torch.Tensor, x: torch.Tensor, lora_a: list[torch.Tensor],
                 lora_b: list[torch.Tensor], scale: float, slot_buffer: torch.Tensor) -> None:
    """:func:`lora_linear`, the operator's body."""
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] > slot_buffer.shape[0]:
        raise ValueError(f"LoRA slot indices for {slot_buffer.shape[0]} tokens, input has {x.shape[0]}")
    cache = _active_cache or LoraProductCache()
    mask = cache.step_mask(slot_buffer, x.shape[0], lora_a, y.dtype)
    if mask is None:  # no adapter in this batch: y stays exactly as it is
        return
    a_all, b_rows = cache.stacked(lora_a, lora_b, y.dtype)
    every = x.to(a_all.dtype) @ a_all.T  # (tokens, S*L*r): every token on every slot's A
    every *= mask
    if scale != 1.0:
        every *= scale
    flat = y.view(-1, y.shape[-1])
    block, col = b_rows[0].shape[0], 0  # block = L*r columns of ``every`` per slice
    for s, b in enumerate(b_rows):
        # y[:, slice s] += every[:, block s] @ B_s, the product rounded to y's dtype before the
        # sum as in vLLM's expand step (a fused multiply-add, rounding once, moved greedy tokens)
        flat[:, col:col + b.shape[1]] += every[:, s * block:(s + 1) * block] @ b
        col += b.shape[1]


# The same function as one opaque operator for torch.compile: traced code must not branch on the
# punica wrapper's Python state (vLLM traces the model once and drops guards), so the slot
# indices, the cache and the "no adapter" test all live inside the operator, read at run time.
_lora_linear_op = torch.library.custom_op("essa::cpu_lora_linear", _lora_linear, mutates_args=("y",))

_lora_linear_op.register_fake(lambda y, x, lora_a, lora_b, scale, slot_buffer: None)


def lora_linear(y: torch.Tensor, x: torch.Tensor, lora_a, lora_b, scale: float,
                slot_buffer: torch.Tensor) -> torch.Tensor:
    """``y[t, slice s] += scale * B_s[slot t] @ A_s[slot t] @ x[t]`` for every token t, in place
    (returns ``y``): token t's slot is ``slot_buffer[t]`` (-1: none) of the stacked
    (L, 1, r, in) ``lora_a`` and (L, 1, out_s, r) ``lora_b`` of the S slices."""
    # Eager calls skip the operator's dispatch; traced code must call the opaque operator.
    product = torch.ops.essa.cpu_lora_linear if torch.compiler.is_compiling() else _lora_linear
    product(y, x, list(lora_a), list(lora_b), scale, slot_buffer)
    return y
