"""Merged-mode swaps are exact in every dtype and gemm path: after many candidate swaps the base
model and the starting adapter give the same greedy output as before any swap, and every touched
weight equals the checkpoint's, bit for bit.

The CPU build packs float32 weights into oneDNN handles and bf16 ones into oneDNN or torch linear
depending on the CPU; a float32 swap once added candidates into the saved originals (``.float()``
of a float32 tensor is no copy) and broke the model after a few generations. Each dtype runs
eager and compiled: the dtype that ``model.dtype: auto`` picks on this machine reuses the
session's engines, the other dtype gets two engines of its own.
"""

import pytest
import torch
from safetensors import safe_open

from essa.adapters.svd_space import SvdSpace
from essa.models.dtype import resolve_dtype
from tests.conftest import start_vllm_engine
from tests.test_engine_vllm import GREEDY, PROMPTS, texts

pytest.importorskip("vllm")

AUTO_DTYPE = resolve_dtype("auto").dtype
OTHER_DTYPE = "float32" if AUTO_DTYPE == "bfloat16" else "bfloat16"


def _engine(demo_model, dtype: str, eager: bool):
    return start_vllm_engine(demo_model, dtype, enforce_eager=eager, mode="merged")


@pytest.fixture(scope="session")
def other_dtype_eager_engine(demo_model):
    engine = _engine(demo_model, OTHER_DTYPE, eager=True)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def other_dtype_compiled_engine(demo_model):
    engine = _engine(demo_model, OTHER_DTYPE, eager=False)
    yield engine
    engine.close()


ENGINES = {("auto", True): "vllm_engine", ("auto", False): "compiled_lora_engine",
           ("other", True): "other_dtype_eager_engine", ("other", False): "other_dtype_compiled_engine"}


@pytest.mark.parametrize("which,eager", list(ENGINES), ids=lambda v: str(v))
def test_many_merged_swaps_leave_base_and_start_exact(request, which, eager, small_adapter, demo_model):
    engine = request.getfixturevalue(ENGINES[(which, eager)])
    dtype = engine.llm.llm_engine.model_config.dtype
    assert dtype == (torch.bfloat16 if (which == "auto") == (AUTO_DTYPE == "bfloat16") else torch.float32)
    assert engine.eager == eager
    merged = engine.merged_mode  # merged passes, also on the hybrid (compiled) engine
    weights = merged.weights
    space = SvdSpace.from_folder(small_adapter)
    # The starting adapter, made strong enough to change greedy text (the fixture is 2% of W).
    start = space.candidate(4.0 * space.start_vector(), "start")
    rng = torch.Generator().manual_seed(7)
    swaps = [space.candidate(space.start_vector() * (1 + 0.5 * torch.randn(space.dim, generator=rng).numpy()),
                             f"c{i}") for i in range(12)]
    conts = ["3 + 4 = 7. The answer is 7."] * len(PROMPTS)
    base_before, start_before = [texts(o) for o in merged.generate(PROMPTS, [None, start], GREEDY)]
    ll_before = merged.score_continuations(PROMPTS, conts, [None, start])
    assert start_before != base_before  # the start adapter changes the model: the check can fail
    merged.generate(PROMPTS[:1], swaps, GREEDY)  # 12 consecutive swaps, each over the previous one
    for cands in ([swaps[0], None], [swaps[5]]):  # more swaps, through the base and back
        merged.generate(PROMPTS[:1], cands, GREEDY)
    base_after, start_after = [texts(o) for o in merged.generate(PROMPTS, [None, start], GREEDY)]
    assert base_after == base_before and start_after == start_before
    assert merged.score_continuations(PROMPTS, conts, [None, start]) == ll_before  # bit for bit
    with safe_open(str(demo_model / "model.safetensors"), "pt") as st:
        for layer in (0, 29):
            qkv = torch.cat([st.get_tensor(f"model.layers.{layer}.self_attn.{m}.weight")
                             for m in ("q_proj", "k_proj", "v_proj")])
            assert torch.equal(weights.originals[(layer, "qkv_proj")], qkv.to(dtype))
            held = weights.current_weight(layer, "qkv_proj")
            assert held is None or torch.equal(held, qkv.to(dtype))
