"""Faster multi-LoRA for vLLM's CPU build (adapter mode): two matrix products per layer.

vLLM's CPU punica ops gather every token's own copy of its adapter's matrices
(``lora_b[indices]``: tokens x out x rank per module), multiply token by token, in float32. That
copy, not the arithmetic, is why LoRA generation on the CPU build ran at 0.1-0.2 of plain.

Here a LoRA layer with S slices (q, k, v of a fused qkv_proj: S = 3) and L adapter slots of rank r
adds its LoRA output with two dense products over all slots at once:

1. ``every = x @ A^T`` with A the S*L*r rows of all slots' A matrices: each token's projection
   on every adapter (tokens x S*L*r, a few percent of the base layer's work for 8 slots of rank 8);
2. zero the columns of the slots a token does not use (a 0/1 mask from the token's slot index;
   index -1, no adapter, keeps nothing);
3. ``y += every @ B`` with B block-diagonal (slice s's rows feed only slice s's output columns).

The products run in the model's dtype (bfloat16 uses the CPU's AMX/AVX512-BF16 units), which is
where vLLM's own expand step rounds the rank-r vectors too. The stacked A and block-diagonal B of
each layer are rebuilt only when vLLM writes new adapter weights into its slots (tensor version
counters). ``tests/test_vllm_cpu_lora.py`` checks the result against vLLM's own op.

``install()`` replaces ``PunicaWrapperCPU.add_lora_linear`` in this process; the engine core runs
in-process (see :mod:`essa.engines.vllm_engine`), so that is where generation runs.
"""

from __future__ import annotations

import torch

_vllm_add_lora_linear = None


def stacked_weights(lora_a: tuple[torch.Tensor, ...], lora_b: tuple[torch.Tensor, ...],
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(A of shape (S*L*r, in), block-diagonal B of shape (S*L*r, sum of slice outputs)).

    lora_a[s]: (L, 1, r, in); lora_b[s]: (L, 1, out_s, r), as vLLM keeps them.
    """
    a_rows = [a.reshape(-1, a.shape[-1]) for a in lora_a]  # slot-major: slot l rows l*r .. l*r+r
    outs = [b.shape[-2] for b in lora_b]
    block = torch.zeros(sum(a.shape[0] for a in a_rows), sum(outs), dtype=dtype)
    row = col = 0
    for b, width in zip(lora_b, outs):
        slots, rank = b.shape[0], b.shape[-1]
        # (L, out, r) -> (L*r, out): row l*r + j is column j of slot l's B
        block[row:row + slots * rank, col:col + width] = b.reshape(slots, width, rank).transpose(1, 2).reshape(slots * rank, width)
        row, col = row + slots * rank, col + width
    return torch.cat(a_rows).to(dtype).contiguous(), block


def slot_mask(token_slots: torch.Tensor, slots: int, rank: int, num_slices: int,
              dtype: torch.dtype) -> torch.Tensor:
    """(tokens, S*L*r) 0/1: 1 on the r columns of each slice's block that the token's slot owns."""
    one_hot = torch.zeros(token_slots.shape[0], slots, dtype=dtype)
    used = token_slots >= 0
    one_hot[used.nonzero().squeeze(1), token_slots[used]] = 1
    per_slice = one_hot.repeat_interleave(rank, dim=1)  # tokens, L*r
    return per_slice.repeat(1, num_slices)


def add_lora_linear(y: torch.Tensor, x: torch.Tensor, lora_a: tuple[torch.Tensor, ...],
                    lora_b: tuple[torch.Tensor, ...], scale: float, output_slices: tuple[int, ...],
                    token_slots: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor] | None = None
                    ) -> torch.Tensor:
    """``y[t, slice s] += scale * B_s[slot t] @ A_s[slot t] @ x[t]`` for every token t, in place.

    ``weights``: :func:`stacked_weights` of (lora_a, lora_b), when the caller keeps them.
    """
    x = x.reshape(-1, x.shape[-1])
    flat = y.view(-1, y.shape[-1])
    if token_slots.shape[0] != x.shape[0]:
        raise ValueError(f"LoRA slot indices for {token_slots.shape[0]} tokens, input has {x.shape[0]}")
    if weights is None:
        weights = stacked_weights(lora_a, lora_b, flat.dtype)
    a_all, b_block = weights
    slots, rank = lora_a[0].shape[0], lora_a[0].shape[-2]
    every = x.to(a_all.dtype) @ a_all.T
    every *= slot_mask(token_slots, slots, rank, len(lora_a), every.dtype)
    if scale != 1.0:
        every *= scale
    flat[:, :sum(output_slices)] += every @ b_block
    return y


def _wrapper_add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices,
                             *, buffer=None, **kwargs):
    """PunicaWrapperCPU.add_lora_linear replacement (same signature; ``buffer`` is not needed)."""
    if self.is_prefill and self.no_lora:
        return y
    cache = self.__dict__.setdefault("_essa_lora_weights", {})
    key = lora_a_stacked[0].data_ptr()
    versions = tuple(t._version for t in (*lora_a_stacked, *lora_b_stacked))
    hit = cache.get(key)
    if hit is None or hit[0] != versions or hit[1][0].dtype != y.dtype:
        hit = (versions, stacked_weights(lora_a_stacked, lora_b_stacked, y.dtype))
        cache[key] = hit
    return add_lora_linear(y, x, lora_a_stacked, lora_b_stacked, scale, output_slices,
                           self.token_lora_indices, hit[1])


def install() -> None:
    """Use this LoRA product for every vLLM CPU LoRA layer in this process (idempotent)."""
    global _vllm_add_lora_linear
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
    if _vllm_add_lora_linear is None:
        _vllm_add_lora_linear = PunicaWrapperCPU.add_lora_linear
        PunicaWrapperCPU.add_lora_linear = _wrapper_add_lora_linear


def uninstall() -> None:
    """Back to vLLM's own CPU ops (benchmarks compare the two in one process)."""
    global _vllm_add_lora_linear
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
    if _vllm_add_lora_linear is not None:
        PunicaWrapperCPU.add_lora_linear = _vllm_add_lora_linear
        _vllm_add_lora_linear = None


def installed() -> bool:
    """Whether this process's vLLM CPU LoRA layers use :func:`add_lora_linear`."""
    return _vllm_add_lora_linear is not None
