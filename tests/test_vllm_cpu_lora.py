"""essa.engines.vllm_cpu_lora: our multi-LoRA product against vLLM's own CPU ops, op and engine."""

import pytest
import torch

from essa.engines.vllm_cpu_lora import LoraProductCache, caching, lora_linear, stacked_weights

pytest.importorskip("vllm")
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU  # noqa: E402

from essa.engines import vllm_internals  # noqa: E402
from tests.test_engine_vllm import GREEDY, PROMPTS, candidates, texts  # noqa: E402


def vllm_reference(y, x, lora_a, lora_b, scale, slices, slots):
    """vLLM's own PunicaWrapperCPU.add_lora_linear (the original, whether or not ours is installed)."""
    original = vllm_internals.vllm_cpu_add_lora_linear()
    wrapper = PunicaWrapperCPU(x.shape[0], 8, "cpu")
    wrapper._token_lora_indices[:x.shape[0]] = slots
    wrapper.indices_len = [x.shape[0]] * 4
    wrapper.is_prefill = False
    original(wrapper, y, x, lora_a, lora_b, scale, slices)
    return y


def random_layer(tokens=37, slots=4, rank=8, width=64, slices=(96, 32, 32), seed=0):
    gen = torch.Generator().manual_seed(seed)
    bf = dict(dtype=torch.bfloat16)
    x = torch.randn(tokens, width, generator=gen).to(**bf)
    lora_a = tuple(torch.randn(slots, 1, rank, width, generator=gen).to(**bf) for _ in slices)
    lora_b = tuple(torch.randn(slots, 1, out, rank, generator=gen).to(**bf) for out in slices)
    y = torch.randn(tokens, sum(slices), generator=gen).to(**bf)
    return x, lora_a, lora_b, y


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_matches_vllm_ops_for_every_slot_and_slice(scale):
    x, lora_a, lora_b, y = random_layer()
    slots = torch.arange(x.shape[0]) % 4
    slices = (96, 32, 32)
    ours = lora_linear(y.clone(), x, lora_a, lora_b, scale, slots)
    theirs = vllm_reference(y.clone(), x, lora_a, lora_b, scale, slices, slots)
    assert not torch.equal(ours, y)  # the adapters changed the output
    # Same bf16 products in another summation order: equal up to a bf16 rounding step.
    assert torch.allclose(ours.float(), theirs.float(), rtol=2 ** -7, atol=0.05)


def test_tokens_without_an_adapter_are_left_alone():
    x, lora_a, lora_b, y = random_layer(tokens=10)
    slots = torch.tensor([0, -1, 1, -1, 2, 3, -1, 0, 1, 2])
    out = lora_linear(y.clone(), x, lora_a, lora_b, 1.0, slots)
    none = slots < 0
    assert torch.equal(out[none], y[none])
    assert not torch.equal(out[~none], y[~none])
    # A token's result depends only on its own slot: the same token alone gives the same row.
    for t in (0, 4, 9):
        alone = lora_linear(y[t:t + 1].clone(), x[t:t + 1], lora_a, lora_b, 1.0, slots[t:t + 1])
        assert torch.allclose(alone.float(), out[t:t + 1].float(), rtol=2 ** -7, atol=0.05)


def test_stacked_weights_keep_slices_apart():
    _, lora_a, lora_b, _ = random_layer(slots=2, rank=8, slices=(16, 8))
    a_all, b_rows = stacked_weights(lora_a, lora_b, torch.bfloat16)
    assert a_all.shape == (2 * 2 * 8, 64) and [b.shape for b in b_rows] == [(16, 16), (16, 8)]
    # Slice s, slot l: rows s*L*r + l*r .. of A; row l*r + j of slice s's B is column j of B_l.
    assert torch.equal(a_all[16 + 8 + 2], lora_a[1][1, 0, 2])
    assert torch.equal(b_rows[0][8 + 3], lora_b[0][1, 0, :, 3])
    assert torch.equal(b_rows[1][5], lora_b[1][0, 0, :, 5])


def test_wrapper_rebuilds_its_stacked_weights_after_vllm_writes_a_slot():
    vllm_internals.install_cpu_lora()
    x, lora_a, lora_b, y = random_layer()
    slots = torch.arange(x.shape[0]) % 4
    wrapper = PunicaWrapperCPU(x.shape[0], 8, "cpu")
    wrapper._token_lora_indices[:x.shape[0]] = slots
    wrapper.indices_len = [x.shape[0]] * 4
    slices = (96, 32, 32)
    with caching(LoraProductCache()):  # an engine's cache, kept across the two calls
        first = wrapper.add_lora_linear(y.clone(), x, lora_a, lora_b, 1.0, slices)
        lora_b[1][2] = 0  # as vLLM's reset_lora/set_lora write a slot in place
        second = wrapper.add_lora_linear(y.clone(), x, lora_a, lora_b, 1.0, slices)
    slot2 = slots == 2
    assert torch.equal(second[slot2, 96:128], y[slot2, 96:128])  # slice 1 of slot 2 now adds nothing
    assert torch.equal(second[~slot2], first[~slot2])


def test_engine_uses_our_product_and_agrees_with_vllm_ops(vllm_lora_engine, small_adapter):
    """The real SmolLM2 engine in adapter mode: greedy completions of two candidates in one pass
    under our product and under vLLM's own ops are the same text (bf16 summation order may move
    a late token: all must share their start, most must be identical)."""
    engine = vllm_lora_engine.adapter_mode
    assert PunicaWrapperCPU.add_lora_linear is not vllm_internals.vllm_cpu_add_lora_linear()  # ours
    cands = candidates(small_adapter, [2.0, 3.0])
    ours = [texts(out) for out in engine.generate(PROMPTS, cands, GREEDY)]
    vllm_internals.uninstall_cpu_lora()
    try:
        theirs = [texts(out) for out in engine.generate(PROMPTS, cands, GREEDY)]
    finally:
        vllm_internals.install_cpu_lora()
    pairs = [(a, b) for k in range(2) for a, b in zip(ours[k], theirs[k])]
    assert sum(a == b for a, b in pairs) >= 6, pairs
    assert all(a.split()[:2] == b.split()[:2] for a, b in pairs), pairs


def test_mask_follows_the_index_buffer_from_step_to_step():
    """The slot mask is kept per step: writing new indices into vLLM's buffer (as each step
    does, in place) must change the result, and a step with no adapter leaves y bit-identical."""
    x, lora_a, lora_b, y = random_layer(tokens=12)
    indices = torch.full((20,), -1, dtype=torch.long)  # vLLM's token index buffer, longer than the step
    call = lambda: lora_linear(y.clone(), x, lora_a, lora_b, 1.0, indices)

    with caching(LoraProductCache()):
        assert torch.equal(call(), y)  # every index -1: nothing added, nothing rounded
        indices[:12].copy_(torch.arange(12) % 4)
        step1 = call()
        indices[:12].copy_((torch.arange(12) + 1) % 4)
        step2 = call()
    want1 = lora_linear(y.clone(), x, lora_a, lora_b, 1.0, torch.arange(12) % 4)
    assert torch.equal(step1, want1) and not torch.equal(step1, y)
    assert torch.equal(step2, lora_linear(y.clone(), x, lora_a, lora_b, 1.0, (torch.arange(12) + 1) % 4))
    assert not torch.equal(step2, step1)


def test_compiled_caller_reads_indices_and_weights_at_run_time():
    """Under torch.compile the product is one opaque operator: a function traced once must
    still see new slot indices and new adapter weights on later calls (nothing baked in)."""
    x, lora_a, lora_b, y = random_layer(tokens=12)
    indices = torch.full((20,), -1, dtype=torch.long)

    def layer(y, x):
        lora_linear(y, x, lora_a, lora_b, 1.0, indices)
        return y * 1.0

    def eager():  # from scratch: no cache
        with caching(None):
            return lora_linear(y.clone(), x, lora_a, lora_b, 1.0, indices[:12])

    compiled = torch.compile(layer, backend="aot_eager", dynamic=True)
    with caching(LoraProductCache()):  # an engine's cache: it must notice the new weights too
        indices[:12].copy_(torch.arange(12) % 4)
        assert torch.equal(compiled(y.clone(), x), eager())
        indices[:12].copy_(torch.tensor([3, -1] * 6))  # the next step's mapping
        assert torch.equal(compiled(y.clone(), x), eager())
        lora_a[0][3] *= 2  # vLLM loads another adapter into slot 3
        out = compiled(y.clone(), x)
        assert torch.equal(out, eager())
    assert torch.equal(out[1::2], y[1::2])  # tokens without an adapter untouched
