"""Faster multi-LoRA for vLLM's CPU build (adapter mode): two matrix products per layer.

vLLM's CPU punica ops gather every token's own copy of its adapter's matrices
(``lora_b[indices]``: tokens x out x rank per module), multiply token by token, in float32. That
copy, not the arithmetic, is why LoRA generation on the CPU build ran at 0.1-0.2 of plain.

Here a LoRA layer with S slices (q, k, v of a fused qkv_proj: S = 3) and L adapter slots of rank r
adds its LoRA output with dense products over all slots at once:

1. ``every = x @ A^T`` with A the S*L*r rows of all slots' A matrices: each token's projection
   on every adapter (tokens x S*L*r, a few percent of the base layer's work for 8 slots of rank 8);
2. zero the columns of the slots a token does not use (a 0/1 mask from the token's slot index,
   built once per step; index -1, no adapter, keeps nothing);
3. per slice s, ``y[:, slice s] += scale * every[:, block s] @ B_s``.

The products run in the model's dtype (bfloat16 uses the CPU's AMX/AVX512-BF16 units), which is
where vLLM's own expand step rounds the rank-r vectors too. The stacked A and B of each layer are rebuilt
only when vLLM writes new adapter weights into its slots (tensor version counters).
``tests/test_vllm_cpu_lora.py`` checks the result against vLLM's own op.

``install()`` replaces ``PunicaWrapperCPU.add_lora_linear`` in this process; the engine core runs
in-process (see :mod:`essa.engines.vllm_engine`), so that is where generation runs. The product
is also one opaque torch operator (``essa::cpu_lora_linear``), so a LoRA engine on the CPU keeps
torch.compile: vLLM's CPU platform turns compilation off with LoRA (its own ops cannot be
traced), and ``install()`` keeps it on.
"""

from __future__ import annotations

import torch

_vllm_add_lora_linear = None
_vllm_check_config = None


def stacked_weights(lora_a: tuple[torch.Tensor, ...], lora_b: tuple[torch.Tensor, ...],
                    dtype: torch.dtype) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(A of shape (S*L*r, in), per slice s the B rows of shape (L*r, out_s)).

    lora_a[s]: (L, 1, r, in); lora_b[s]: (L, 1, out_s, r), as vLLM keeps them. Rows are
    slice-major, then slot-major: slice s, slot l owns rows s*L*r + l*r .. + r of A and rows
    l*r .. l*r + r of slice s's B.
    """
    a_rows = [a.reshape(-1, a.shape[-1]) for a in lora_a]
    b_rows = []
    for b in lora_b:
        slots, width, rank = b.shape[0], b.shape[-2], b.shape[-1]
        # (L, out, r) -> (L*r, out): row l*r + j is column j of slot l's B
        b_rows.append(b.reshape(slots, width, rank).transpose(1, 2).reshape(slots * rank, width)
                      .to(dtype).contiguous())
    return torch.cat(a_rows).to(dtype).contiguous(), tuple(b_rows)


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
                    token_slots: torch.Tensor, weights: tuple | None = None,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """``y[t, slice s] += scale * B_s[slot t] @ A_s[slot t] @ x[t]`` for every token t, in place.

    ``weights``: :func:`stacked_weights` of (lora_a, lora_b), and ``mask``: :func:`slot_mask` of
    ``token_slots``, when the caller keeps them.
    """
    x = x.reshape(-1, x.shape[-1])
    flat = y.view(-1, y.shape[-1])
    if token_slots.shape[0] != x.shape[0]:
        raise ValueError(f"LoRA slot indices for {token_slots.shape[0]} tokens, input has {x.shape[0]}")
    if weights is None:
        weights = stacked_weights(lora_a, lora_b, flat.dtype)
    a_all, b_rows = weights
    if mask is None:
        mask = slot_mask(token_slots, lora_a[0].shape[0], lora_a[0].shape[-2], len(lora_a), a_all.dtype)
    every = x.to(a_all.dtype) @ a_all.T
    every *= mask
    if scale != 1.0:
        every *= scale
    block, col = b_rows[0].shape[0], 0  # block = L*r columns of ``every`` per slice
    for s, (b, width) in enumerate(zip(b_rows, output_slices)):
        # y[:, slice s] += every[:, block s] @ B_s, the product rounded to y's dtype before the
        # sum as in vLLM's expand step (a fused multiply-add, rounding once, moved greedy tokens)
        flat[:, col:col + width] += every[:, s * block:(s + 1) * block] @ b
        col += width
    return y


_weights_cache: dict[int, tuple[tuple, tuple]] = {}  # A's address -> (versions, stacked weights)
_mask_cache: dict = {}  # "step" -> (index buffer, version, tokens); (slots, rank, S, dtype) -> mask


def _cached_weights(lora_a, lora_b, dtype: torch.dtype) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """:func:`stacked_weights` of one layer, rebuilt only after vLLM wrote into its slots."""
    key = lora_a[0].data_ptr()
    versions = tuple(t._version for t in (*lora_a, *lora_b)) + (dtype,)
    hit = _weights_cache.get(key)
    if hit is None or hit[0] != versions:
        hit = (versions, stacked_weights(lora_a, lora_b, dtype))
        _weights_cache[key] = hit
    return hit[1]


def forget_weights() -> None:
    """Drop the stacked weights and masks kept per layer and step (an engine starts or closes:
    tensor addresses get reused)."""
    _weights_cache.clear()
    _mask_cache.clear()


def _step_mask(slot_buffer: torch.Tensor, tokens: int, slots: int, rank: int, num_slices: int,
               dtype: torch.dtype) -> torch.Tensor | None:
    """:func:`slot_mask` of this step's tokens, None when no token uses an adapter.

    Built once per step and layer shape, not in each of the model's LoRA layers: vLLM writes
    its token index buffer in place when the step's mapping changes (its version counter moves),
    and every LoRA layer of the step reads the same indices."""
    step = (slot_buffer.data_ptr(), slot_buffer._version, tokens)
    if _mask_cache.get("step") != step:
        _mask_cache.clear()
        _mask_cache["step"] = step
    key = (slots, rank, num_slices, dtype)
    if key not in _mask_cache:
        token_slots = slot_buffer[:tokens]
        used = bool((token_slots >= 0).any())
        _mask_cache[key] = slot_mask(token_slots, slots, rank, num_slices, dtype) if used else None
    return _mask_cache[key]


def _lora_linear(y: torch.Tensor, x: torch.Tensor, lora_a: list[torch.Tensor],
                 lora_b: list[torch.Tensor], scale: float, slot_buffer: torch.Tensor) -> None:
    """The layer's LoRA output added into ``y``; token t's slot is ``slot_buffer[t]``."""
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] > slot_buffer.shape[0]:
        raise ValueError(f"LoRA slot indices for {slot_buffer.shape[0]} tokens, input has {x.shape[0]}")
    mask = _step_mask(slot_buffer, x.shape[0], lora_a[0].shape[0], lora_a[0].shape[-2], len(lora_a),
                      y.dtype)
    if mask is None:  # no adapter in this batch: y stays exactly as it is
        return
    output_slices = tuple(b.shape[-2] for b in lora_b)
    add_lora_linear(y, x, lora_a, lora_b, scale, output_slices, slot_buffer[:x.shape[0]],
                    _cached_weights(lora_a, lora_b, y.dtype), mask)


# The same function as one opaque operator for torch.compile: traced code must not branch on the
# punica wrapper's Python state (vLLM traces the model once and drops guards), so the slot
# indices, the cache and the "no adapter" test all live inside the operator, read at run time.
_lora_linear_op = torch.library.custom_op("essa::cpu_lora_linear", _lora_linear, mutates_args=("y",))


@_lora_linear_op.register_fake
def _lora_linear_fake(y, x, lora_a, lora_b, scale, slot_buffer) -> None:
    return None


def _wrapper_add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices,
                             *, buffer=None, **kwargs):
    """PunicaWrapperCPU.add_lora_linear replacement (same signature; ``buffer`` is not needed)."""
    # Eager calls skip the operator's dispatch; traced code must call the opaque operator.
    product = torch.ops.essa.cpu_lora_linear if torch.compiler.is_compiling() else _lora_linear
    # The first rows of vLLM's token index buffer belong to this step's tokens, in order.
    product(y, x, list(lora_a_stacked), list(lora_b_stacked), scale, self._token_lora_indices)
    return y


def _config_keeping_compile(vllm_check):
    """CpuPlatform.check_and_update_config that leaves torch.compile on with LoRA enabled.

    vLLM turns compilation off on the CPU when LoRA is on, because its CPU LoRA ops cannot be
    traced; our product is one opaque operator, so the compiled graph calls it like a kernel."""
    def check_and_update_config(cls, vllm_config):
        lora = vllm_config.lora_config
        vllm_config.lora_config = None
        try:
            vllm_check.__get__(None, cls)(vllm_config)
        finally:
            vllm_config.lora_config = lora
    return classmethod(check_and_update_config)


def install() -> None:
    """Use this LoRA product for every vLLM CPU LoRA layer in this process (idempotent); vLLM's
    CPU platform then keeps torch.compile on for LoRA engines (``enforce_eager`` still wins)."""
    global _vllm_add_lora_linear, _vllm_check_config
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
    from vllm.platforms.cpu import CpuPlatform
    if _vllm_add_lora_linear is None:
        _vllm_add_lora_linear = PunicaWrapperCPU.add_lora_linear
        PunicaWrapperCPU.add_lora_linear = _wrapper_add_lora_linear
        _vllm_check_config = CpuPlatform.__dict__["check_and_update_config"]  # the classmethod
        CpuPlatform.check_and_update_config = _config_keeping_compile(_vllm_check_config)


def uninstall() -> None:
    """Back to vLLM's own CPU ops (benchmarks compare the two in one process)."""
    global _vllm_add_lora_linear, _vllm_check_config
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
    from vllm.platforms.cpu import CpuPlatform
    if _vllm_add_lora_linear is not None:
        PunicaWrapperCPU.add_lora_linear = _vllm_add_lora_linear
        CpuPlatform.check_and_update_config = _vllm_check_config
        _vllm_add_lora_linear = _vllm_check_config = None


def installed() -> bool:
    """Whether this process's vLLM CPU LoRA layers use :func:`add_lora_linear`."""
    return _vllm_add_lora_linear is not None
