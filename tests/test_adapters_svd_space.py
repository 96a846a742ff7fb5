"""The SVD search space on synthetic PEFT folders: layout, dimension, vector <-> tensors."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from essa.adapters import AdapterError, SvdSpace, peft_tensors, search_dim, searched_count, write_adapter
from essa.adapters.init import lora_config

KINDS = {"q_proj": (48, 32), "k_proj": (16, 32), "o_proj": (32, 48)}  # (out, in) per kind


def make_adapter(folder, rank=4, layers=3, alpha=8, seed=0):
    """A PEFT LoRA folder with Gaussian factors (both non-zero), no model needed."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(layers):
        for kind, (out, inp) in KINDS.items():
            name = f"base_model.model.model.layers.{layer}.self_attn.{kind}"
            tensors[f"{name}.lora_A.weight"] = torch.randn(rank, inp, generator=gen)  # (r, in)
            tensors[f"{name}.lora_B.weight"] = torch.randn(out, rank, generator=gen)  # (out, r)
    write_adapter(folder, tensors, lora_config(rank, alpha, list(KINDS)))
    return folder


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    return SvdSpace.from_folder(make_adapter(tmp_path_factory.mktemp("ad")), alpha_frac=0.5)


def rel_err(x, y):
    x, y = x.double(), y.double()
    return (torch.linalg.matrix_norm(x - y) / torch.linalg.matrix_norm(y)).item()


@pytest.mark.parametrize("rank, alpha_frac, k", [
    (8, 1.0, 8), (8, 0.5, 4), (8, 0.3, 2), (16, 0.25, 4), (2, 0.5, 1), (1, 1.0, 1),
])
def test_dimension_and_layout(tmp_path, rank, alpha_frac, k):
    layers = 2
    space = SvdSpace.from_folder(make_adapter(tmp_path, rank=rank, layers=layers), alpha_frac)
    n_modules = layers * len(KINDS)
    assert space.k == k
    assert space.dim == n_modules * 2 * k == search_dim(n_modules, rank, alpha_frac)
    assert space.start_vector().shape == (space.dim,)
    # Slices tile [0, d) contiguously, k each, A before B for every module.
    assert [s.start for s in space.layout] == list(range(0, space.dim, k))
    assert all(s.stop - s.start == k for s in space.layout)
    assert [s.factor for s in space.layout[:2]] == ["A", "B"]
    assert len({(s.module, s.factor) for s in space.layout}) == len(space.layout)
    assert space.summary.startswith(f"d = {space.dim:,} = {layers} layers x {len(KINDS)} modules x "
                                    f"2 factors x {k} values")


def test_floor_tolerates_rounding():
    assert 0.29 * 100 < 29  # floating point; the count must still be 29
    assert searched_count(100, 0.29) == 29
    assert searched_count(7, 0.5) == 3


@pytest.mark.parametrize("alpha_frac", [0.1, 0.0, -0.5, 1.5])
def test_bad_alpha_frac_is_a_clear_error(tmp_path, alpha_frac):
    folder = make_adapter(tmp_path, rank=4, layers=1)
    with pytest.raises(ValueError, match="alpha_frac"):
        SvdSpace.from_folder(folder, alpha_frac)


def factor(candidate, sl):
    """The tensor of slice ``sl``'s factor in a candidate."""
    return candidate.factors[sl.module]["AB".index(sl.factor)]


def tensors(space, x):
    """The candidate of ``x`` under PEFT's keys."""
    return peft_tensors(space.candidate(x))


def test_start_vector_is_the_descending_source_singular_values(space):
    x0 = space.start_vector()
    for sl in space.layout[:6]:
        s = torch.linalg.svdvals(factor(space.adapter.candidate, sl).double()).numpy()
        np.testing.assert_allclose(x0[sl.start:sl.stop], s[: space.k], rtol=1e-12)
        assert np.all(np.diff(x0[sl.start:sl.stop]) <= 0)


def test_round_trip_keeps_unsearched_values(space):
    assert space.k < space.rank  # alpha_frac 0.5: half the values are not in the vector
    out = tensors(space, space.start_vector())
    src = peft_tensors(space.adapter.candidate)
    assert list(out) == list(src)  # the same modules, in the same order
    for key in src:
        assert out[key].shape == src[key].shape and out[key].dtype == torch.float32
        assert rel_err(out[key], src[key]) < 1e-5


def test_one_coordinate_changes_one_singular_value_only(space):
    x0 = space.start_vector()
    base = tensors(space, x0)
    rng = np.random.default_rng(0)
    for i in [0, space.k, space.dim - 1, *rng.integers(0, space.dim, 3)]:
        x = x0.copy()
        x[i] += 0.37
        out = tensors(space, x)
        sl = next(s for s in space.layout if s.start <= i < s.stop)
        changed = sl.module.key(sl.factor)
        assert all(torch.equal(out[k], base[k]) for k in out if k != changed)
        # In the frozen source basis the new factor is diagonal with one entry moved.
        u, s, vt = torch.linalg.svd(factor(space.adapter.candidate, sl).double(), full_matrices=False)
        core = u.T @ out[changed].double() @ vt.T  # (r, r)
        expected = s.clone()
        expected[i - sl.start] = x[i]
        torch.testing.assert_close(core, torch.diag(expected), atol=2e-5, rtol=0)


def test_every_call_returns_fresh_tensors(space):
    x0 = space.start_vector()
    first = space.candidate(x0).factors
    module = next(iter(first))
    snapshot = first[module][1].clone()
    first[module][1].mul_(4.0)  # what vLLM does with alpha / r
    second = space.candidate(x0).factors
    assert torch.equal(second[module][1], snapshot)
    assert second[module][1].data_ptr() != first[module][1].data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_written_candidate_is_the_materialized_adapter(space, tmp_path, dtype):
    x = space.start_vector() * np.linspace(0.8, 1.2, space.dim)
    returned = peft_tensors(space.write_candidate(x, tmp_path / "cand", dtype=dtype))
    on_disk = load_file(str(tmp_path / "cand" / "adapter_model.safetensors"))
    expected = tensors(space, x)
    assert set(on_disk) == set(expected)
    for key, tensor in on_disk.items():
        assert tensor.dtype == dtype and torch.equal(tensor, returned[key])
        tol = 0 if dtype == torch.float32 else 1e-2  # bf16 rounding
        torch.testing.assert_close(tensor.float(), expected[key], rtol=tol, atol=tol)
    written_config = json.loads((tmp_path / "cand" / "adapter_config.json").read_text())
    assert written_config == space.adapter.config


def test_module_deltas_are_scaled_products(space):
    from essa.engines.lora_weights import module_deltas
    x = space.start_vector() * 1.1
    candidate = space.candidate(x)
    deltas = module_deltas(candidate)
    assert list(deltas) == [(m.layer, m.kind) for m in space.adapter.modules]
    assert space.scale == candidate.scale == 8 / 4
    for m, (a, b) in candidate.factors.items():
        manual = space.scale * b @ a  # (out, in)
        assert deltas[m.layer, m.kind].shape == (m.out_features, m.in_features)
        torch.testing.assert_close(deltas[m.layer, m.kind], manual, rtol=1e-5, atol=1e-6)


def test_record_rebuilds_the_same_space_and_detects_another_adapter(space, tmp_path):
    record = json.loads(json.dumps(space.record()))  # as it would travel between processes
    again = SvdSpace.from_record(record)
    np.testing.assert_array_equal(again.start_vector(), space.start_vector())
    x = space.start_vector() * 0.9
    a, b = tensors(space, x), tensors(again, x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = make_adapter(tmp_path / "other", seed=1)
    with pytest.raises(AdapterError, match="sha256"):
        SvdSpace.from_record(record, path=other)


def test_float32_and_read_only_vectors_are_accepted(space):
    x = space.start_vector() * 1.05
    x32 = x.astype(np.float32)
    x32.flags.writeable = False
    a, b = tensors(space, x), tensors(space, x32)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_vectors_are_rejected(space):
    with pytest.raises(ValueError, match="shape"):
        space.candidate(np.ones(space.dim + 1))
    x = space.start_vector()
    x[3] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        space.candidate(x)


def test_relative_vector_is_centred_on_the_source(space):
    relative = SvdSpace(space.adapter, space.alpha_frac, "relative")
    z = relative.start_vector()
    np.testing.assert_array_equal(z, np.zeros(space.dim))
    np.testing.assert_array_equal(relative.singular_values(z), space.start_vector())
    z[2] = 0.5
    assert relative.singular_values(z)[2] == pytest.approx(1.5 * space.start_vector()[2])
    s = relative.singular_values(z)
    a, b = tensors(relative, z), tensors(space, s)
    assert all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads(json.dumps(relative.record()))  # workers rebuild the same parametrization
    assert SvdSpace.from_record(record).parametrization == "relative"
    with pytest.raises(ValueError, match="parametrization"):
        SvdSpace(space.adapter, space.alpha_frac, "log")


def test_benchmark_script_runs_with_tiny_settings(tmp_path):
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "benchmarks" / "adapter_materialize.py"), "--layers", "2",
           "--reps", "2", "--threads", "1", "--dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=True)
    assert "d = 128 = 2 layers x 4 modules x 2 factors x 8 values" in done.stdout
    assert "baseline: safetensors save_file only" in done.stdout
